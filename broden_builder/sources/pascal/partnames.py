"""Pascal-Part's part table (``part2ind.m``) parsed into readable, Broden-style part names.

``part2ind.m`` is a small MATLAB function that fills ``pimap{k}`` (k = 1..20, the VOC
classes in alphabetical order, each announced by a ``% [class]`` comment) with
``'short name' -> index`` entries. It uses five statement forms, all handled here:

- ``pimap{k}('lwing') = 3;  % left wing``            one part, optional long name
- ``for ii = 1:10`` + ``pimap{k}(sprintf('engine_%d', ii)) = 10+ii;  % ...``   numbered parts
- ``keySet = keys(pimap{m}); ... pimap{k} = containers.Map(keySet, valueSet);``  copy a class
- ``remove(pimap{k}, {'lhorn', 'rhorn'});``            drop parts of a copied class
- everything else (``function``, ``end``, comments, loop headers) carries no parts.

Readable names follow the original Broden build: the long name from the trailing comment
(unless it only says "multiple ..."), else a spelled-out abbreviation, else the short name
without its ``_N`` suffix; then the words left, right, front, back, upper, lower and side
are dropped. Names are *not* qualified by their object (``head`` of a cat and of a person
are the same part name), as in the original; the source still gives each (object class,
part name) its own code, so that frequencies count as the original's (``source.part_codes``). A part whose name becomes empty (the
``frontside``/``leftside``/... panels of bus and car) has no readable name and stays unlabeled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

from ...errors import BrodenError

#: Words the original build removed from part names ("collapse adjectives").
DROPPED_WORDS = frozenset({"left", "right", "front", "back", "upper", "lower", "side"})

#: Short names that part2ind.m leaves without an explaining comment, spelled out.
ABBREVIATIONS: Mapping[str, str] = {
    "frontside": "front side",
    "leftside": "left side",
    "rightside": "right side",
    "backside": "back side",
    "roofside": "roof side",
    "leftmirror": "left mirror",
    "rightmirror": "right mirror",
    "lfho": "left front hoof",
    "rfho": "right front hoof",
    "lbho": "left back hoof",
    "rbho": "right back hoof",
    "fwheel": "front wheel",
    "bwheel": "back wheel",
}

_HEADER = re.compile(r"^%\s*\[([^\]]+)\]")
_SINGLE = re.compile(r"^\s*pimap\{(\d+)\}\('([^']+)'\)\s*=\s*(\d+)\s*;\s*(?:%\s*(.*?))?\s*$")
_LOOP = re.compile(r"^\s*for\s+ii\s*=\s*1\s*:\s*(\d+)")
_NUMBERED = re.compile(
    r"^\s*pimap\{(\d+)\}\(sprintf\('([^'%]+)%d'\s*,\s*ii\)\)\s*=\s*(\d+)\s*\+\s*ii\s*;\s*(?:%\s*(.*?))?\s*$")
_KEYSET = re.compile(r"^\s*keySet\s*=\s*keys\(pimap\{(\d+)\}\)")
_COPY = re.compile(r"^\s*pimap\{(\d+)\}\s*=\s*containers\.Map\(\s*keySet\s*,\s*valueSet\s*\)")
_REMOVE = re.compile(r"^\s*remove\(pimap\{(\d+)\}\s*,\s*\{([^}]*)\}\s*\)")


class Part2IndError(BrodenError, ValueError):
    """part2ind.m does not parse; names the file and line."""


def readable_part_name(short: str, comment: str = "", drop: frozenset = DROPPED_WORDS) -> str:
    """The Broden name of one raw part entry: long name, then the positional words dropped.

    ``short`` is the key as written in part2ind.m (``'lwing'``, ``'engine_'`` for a numbered
    family), ``comment`` its trailing comment. The result may be '' (no usable name).
    """
    stem = re.sub(r"_\d*$", "", short)
    comment = (comment or "").strip()
    if comment and "multiple" not in comment.lower():
        long = comment
    else:
        long = ABBREVIATIONS.get(stem, stem)
    words = [w for w in re.split(r"[\s_]+", long.lower()) if w and w not in drop]
    return " ".join(words)


@dataclass(frozen=True)
class PartTable:
    """Parsed part2ind.m: class order, and per class the raw part name -> readable name."""

    classes: Tuple[str, ...]  # index k-1 -> class name ('aeroplane', ...)
    parts: Mapping[str, Mapping[str, str]]  # class -> raw part name ('engine_3') -> readable name

    def class_name(self, class_ind: int) -> str:
        if not 1 <= class_ind <= len(self.classes):
            raise KeyError(f"class index {class_ind} outside 1..{len(self.classes)}")
        return self.classes[class_ind - 1]

    def part_names(self) -> Tuple[str, ...]:
        """All distinct non-empty readable names, sorted (the part vocabulary)."""
        return tuple(sorted({n for table in self.parts.values() for n in table.values() if n}))


def parse_part2ind(text: str, origin: str = "part2ind.m") -> PartTable:
    """Parse the text of part2ind.m. Raises Part2IndError naming ``origin`` and the line."""
    classes: list = []
    tables: Dict[int, Dict[str, str]] = {}
    loop_count = None
    keyset_from = None
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{origin}:{lineno}"
        m = _HEADER.match(line)
        if m:
            classes.append(m.group(1).strip())
            continue
        m = _SINGLE.match(line)
        if m:
            k, short, comment = int(m.group(1)), m.group(2), m.group(4) or ""
            tables.setdefault(k, {})[short] = readable_part_name(short, comment)
            continue
        m = _LOOP.match(line)
        if m:
            loop_count = int(m.group(1))
            continue
        m = _NUMBERED.match(line)
        if m:
            if loop_count is None:
                raise Part2IndError(f"{where}: numbered part outside a 'for ii = 1:N' loop: {line.strip()!r}")
            k, prefix, comment = int(m.group(1)), m.group(2), m.group(4) or ""
            name = readable_part_name(prefix, comment)
            for i in range(1, loop_count + 1):
                tables.setdefault(k, {})[f"{prefix}{i}"] = name
            continue
        m = _KEYSET.match(line)
        if m:
            keyset_from = int(m.group(1))
            continue
        m = _COPY.match(line)
        if m:
            if keyset_from is None or keyset_from not in tables:
                raise Part2IndError(f"{where}: containers.Map copy without a known keySet source")
            tables[int(m.group(1))] = dict(tables[keyset_from])
            continue
        m = _REMOVE.match(line)
        if m:
            k = int(m.group(1))
            for key in re.findall(r"'([^']+)'", m.group(2)):
                tables.get(k, {}).pop(key, None)
            continue
        if "pimap{" in line and "=" in line and not line.lstrip().startswith("%") and "cell(" not in line \
                and "pimap{ii}" not in line and "valueSet" not in line:
            raise Part2IndError(f"{where}: unrecognised part assignment: {line.strip()!r}")
    if not classes:
        raise Part2IndError(f"{origin}: no '% [class]' headers found; is this Pascal-Part's part2ind.m?")
    bad = [k for k in tables if not 1 <= k <= len(classes)]
    if bad:
        raise Part2IndError(f"{origin}: pimap indices {bad} outside the {len(classes)} declared classes")
    parts = {c: dict(tables.get(i + 1, {})) for i, c in enumerate(classes)}
    return PartTable(tuple(classes), parts)


def load_part2ind(path: Union[str, Path]) -> PartTable:
    """Read and parse a part2ind.m file."""
    path = Path(path)
    return parse_part2ind(path.read_text("utf-8", errors="replace"), origin=str(path))
