"""The unifier: source labels -> one global vocabulary, filtered and numbered.

Rules (after the original Broden build, see BRODEN_FORMAT.md):
names are lower-cased; scene names normalised and suffixed ``-s``, colour names ``-c``;
a preferred-name table puts the preferred name first; blacklisted synonyms never merge;
labels sharing a name merge, the most frequent source label claiming its names first;
a merged label is kept when it is in >= min_frequency images and covers >= min_coverage
images in total; kept labels are numbered by frequency, then coverage (descending).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

#: name -> preferred name (written for this project from the published description).
PREFERRED_NAMES: dict = {
    "aeroplane": "airplane",
    "motorbike": "motorbike",
    "tvmonitor": "television",
    "tv monitor": "television",
    "pottedplant": "potted plant",
    "diningtable": "table",
    "dining table": "table",
    "person head": "head",
    "person hair": "hair",
    "person leg": "leg",
    "person arm": "arm",
    "person hand": "hand",
    "person foot": "foot",
    "person torso": "torso",
    "person neck": "neck",
    "person nose": "nose",
    "person mouth": "mouth",
    "person eye": "eye",
    "person ear": "ear",
    "person eyebrow": "eyebrow",
    "rug": "rug",
    "sofa": "sofa",
    "couch": "sofa",
    "tv": "television",
    "television receiver": "television",
    # Pascal-Context / Pascal-Part spellings (helper 4B)
    "handle bar": "handlebar",  # bicycle part (part2ind.m comment) = motorbike part 'handlebar'
    "fire place": "fireplace",
    "fridge": "refrigerator",
    # from the cross-name merges on the real ADE 2016 index + Pascal tables (helper 5b, benches/list_merges.py)
    "cell phone": "cellphone",  # Pascal-Context 'cell phone' = ADE 'cellular telephone, ..., cellphone, ...'
    "flood": "floodlight",      # ADE 'flood, floodlight, flood lamp, photoflood': the lamp, not water
    "plaything": "toy",         # ADE 'plaything, toy' = Pascal-Context 'toy'
}

#: Synonyms too ambiguous to merge on (a car is not a 'machine'; 'plant' the flora is not a factory).
MERGE_BLACKLIST: frozenset = frozenset({
    "machine", "plant", "building", "structure", "device", "object", "thing", "stuff", "unit",
    "set", "board", "case", "top", "base", "body", "stand", "cover", "frame", "support", "part",
    "piece", "area", "ground", "surface", "material", "other",
    # ADE20K synonyms that would swallow a Pascal name of another meaning (helper 4B):
    "wheel",    # 'bicycle, bike, wheel, cycle' and 'steering wheel, wheel' vs the part 'wheel'
    "coach",    # 'bus, autobus, coach, ...' vs the train part 'coach' (a railway carriage)
    "screen",   # 'blind, screen', 'screen door, screen' vs the tvmonitor part / Context 'screen'
    "pot", "can", "stool",  # 'toilet, can, commode, crapper, pot, potty, stool, throne'
    "dog",      # 'andiron, firedog, dog, dog-iron' vs the animal
    "cake",     # 'patty, cake'
    "card",     # 'poster, posting, placard, notice, bill, card'
    "drop",     # 'cliff, drop, drop-off' vs Context 'drop' (of liquid)
    "globe",    # 'ball, globe, orb' vs Context 'globe'
    "lid",      # 'hat, chapeau, lid'
    "paper",    # 'newspaper, paper' (Context has both 'paper' and 'newspaper')
    "counter",  # 'buffet, counter, sideboard'
    # found on the real ADE 2016 index (helper 5b, benches/list_merges.py; scenes of the images in brackets):
    "plane",     # 'airplane, aeroplane, plane' vs the part 'plane' (art studio: a tool or a flat face)
    "alarm",     # 'alarm clock, alarm' (bedrooms) vs 'alarm, warning device, alarm system' (streets)
    "carriage",  # 'baby buggy, baby carriage, carriage, ...' vs 'carriage' (streets: horse-drawn)
    "hoop",      # 'basket, basketball hoop, hoop' vs the part 'hoop' (wine cellars: barrel hoops)
    "shell", "shield",  # 'carapace, shell, cuticle, shield' vs 'shell, case, casing' and 'shield'
    "cell",      # 'cellular telephone, ..., cell, ...' vs 'cell' (jail cells)
    "console",   # 'console table, console' vs 'console' (cockpits, editing rooms)
    "mantle",    # 'curtain, drape, drapery, mantle, pall' vs 'mantle' (living rooms: the mantelpiece)
    "plug",      # 'fireplug, fire hydrant, plug' vs 'plug' (bathrooms, kitchens)
    "hutch",     # 'hovel, hut, hutch, shack, shanty' vs 'hutch' (a cupboard; a rabbit hutch)
    "boiler",    # 'kettle, boiler' vs 'boiler' (basements, furnace rooms)
    "throne",    # 'toilet, can, commode, ..., throne' vs 'throne' (throne rooms)
    "press",     # 'wardrobe, closet, press' vs 'press' (a workroom machine)
})


def normalize_name(name: str, category: str) -> str:
    """Lower-case and collapse spaces; scenes: '/' and ' - ' to '-' and a '-s' suffix; colours: '-c'."""
    n = re.sub(r"\s+", " ", str(name).strip().lower())
    if category == "scene":
        n = n.replace(" - ", "-").replace("/", "-")
        if not n.endswith("-s"):
            n += "-s"
    elif category == "color" and not n.endswith("-c"):
        n += "-c"
    return n


def split_synonyms(names: Sequence[str]) -> list:
    """Flatten names that are comma-separated synonym lists ('person, individual') preserving order."""
    out = []
    for entry in names:
        for part in str(entry).split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


@dataclass
class SourceLabel:
    """A label of one source in one category, with its native-resolution statistics."""

    source: str
    category: str
    code: int
    names: tuple
    frequency: int = 0
    coverage: float = 0.0

    @property
    def key(self) -> tuple:
        return (self.source, self.category, self.code)


@dataclass
class GlobalLabel:
    """A unified label: name, synonyms, member source labels and (after numbering) its number."""

    name: str
    syns: list = field(default_factory=list)
    members: list = field(default_factory=list)
    number: int = 0

    @property
    def frequency(self) -> int:
        return sum(m.frequency for m in self.members)

    @property
    def coverage(self) -> float:
        return sum(m.coverage for m in self.members)

    def category_counts(self) -> dict:
        out: dict = {}
        for m in self.members:
            out[m.category] = out.get(m.category, 0) + m.frequency
        return out

    def primary_category(self) -> str:
        """The category where the label covers most."""
        cov: dict = {}
        for m in self.members:
            cov[m.category] = cov.get(m.category, 0.0) + m.coverage
        return max(sorted(cov), key=lambda c: cov[c]) if cov else ""


@dataclass
class Vocabulary:
    """The unifier's result: kept labels (numbered from 1), dropped ones, and source key -> number."""

    labels: list
    dropped: list
    mapping: dict  # (source, category, code) -> global number, 0 when dropped

    def lookup(self, source: str, category: str, max_code: int):
        """A numpy lookup array: source code -> global number (0 for unknown or dropped)."""
        import numpy as np

        table = np.zeros(max_code + 1, dtype=np.int32)
        for (s, c, code), num in self.mapping.items():
            if s == source and c == category and code <= max_code:
                table[code] = num
        return table

    def category_counts(self) -> dict:
        out: dict = {}
        for lab in self.labels:
            for c in lab.category_counts():
                out[c] = out.get(c, 0) + 1
        return out


def prepare_names(names: Sequence[str], category: str, preferred: Mapping[str, str] = PREFERRED_NAMES) -> tuple:
    """Normalised names of a source label, preferred name first."""
    flat = [normalize_name(n, category) for n in split_synonyms(names)]
    flat = [n for n in flat if n and n not in ("-s", "-c")]
    for n in list(flat):
        p = preferred.get(n)
        if p:
            p = normalize_name(p, category)
            if p in flat:
                flat.remove(p)
            flat.insert(0, p)
            break
    seen = []
    for n in flat:
        if n not in seen:
            seen.append(n)
    return tuple(seen)


def unify(
    source_labels: Iterable[SourceLabel],
    min_frequency: int = 10,
    min_coverage: float = 0.5,
    preferred: Mapping[str, str] = PREFERRED_NAMES,
    blacklist: Iterable[str] = MERGE_BLACKLIST,
    reserved: Optional[Mapping[str, int]] = None,
) -> Vocabulary:
    """Merge, filter and number source labels. Deterministic for the same input.

    ``reserved`` (name -> number) fixes numbers of labels that already exist (``broden add``):
    each reserved name is its own label that keeps its name and number whatever the
    frequencies; a source label whose first name is reserved joins that label and claims
    its other names (so the existing labels' synonyms are honoured), before any other
    source label is merged. New labels are numbered after the largest reserved one.
    Reserved labels that no source label joins are left out of the result.
    """
    black = frozenset(blacklist)
    reserved = dict(reserved or {})
    items = [sl for sl in source_labels if sl.frequency > 0 or reserved]
    for sl in items:
        own = prepare_names(sl.names, sl.category, {})
        # an existing (reserved) label keeps its own first name; others get the preferred-name table
        sl.names = own if own and own[0] in reserved else prepare_names(sl.names, sl.category, preferred)
    items = [sl for sl in items if sl.names]
    items.sort(key=lambda s: (s.names[0] not in reserved, reserved.get(s.names[0], 0),
                              -s.frequency, -s.coverage, s.source, s.category, s.code))
    claimed: dict = {}
    merged: list = []
    for name in sorted(reserved, key=lambda n: reserved[n]):
        claimed[name] = GlobalLabel(name=name)
        merged.append(claimed[name])
    for sl in items:
        target = claimed[sl.names[0]] if sl.names[0] in reserved else None
        for i, n in enumerate(sl.names):
            if target is not None:
                break
            if (i > 0 and n in black) or n not in claimed:
                continue
            target = claimed[n]
            break
        if target is None:
            target = GlobalLabel(name=sl.names[0])
            merged.append(target)
        target.members.append(sl)
        for i, n in enumerate(sl.names):
            if i > 0 and n in black:
                continue
            claimed.setdefault(n, target)
    for g in merged:
        syns = []
        for m in g.members:
            for i, n in enumerate(m.names):
                if i > 0 and n in black:
                    continue  # a confusing synonym is neither merged on nor listed
                if n != g.name and n not in syns:
                    syns.append(n)
        g.syns = syns
    merged = [g for g in merged if g.members]
    kept, dropped = [], []
    for g in merged:
        if g.name in reserved or (g.frequency >= min_frequency and g.coverage >= min_coverage):
            kept.append(g)
        else:
            dropped.append(g)
    fixed = [g for g in kept if g.name in reserved]
    new = [g for g in kept if g.name not in reserved]
    for g in fixed:
        g.number = reserved[g.name]
    new.sort(key=lambda g: (-g.frequency, -g.coverage, g.name))
    start = max(reserved.values(), default=0) + 1
    for i, g in enumerate(new):
        g.number = start + i
    kept = sorted(fixed + new, key=lambda g: g.number)
    mapping = {}
    for g in kept:
        for m in g.members:
            mapping[m.key] = g.number
    for g in dropped:
        for m in g.members:
            mapping[m.key] = 0
    return Vocabulary(labels=kept, dropped=dropped, mapping=mapping)
