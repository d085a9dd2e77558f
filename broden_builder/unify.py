"""The unifier: source labels -> one global vocabulary, filtered and numbered.

Default rule ``original`` (BRODEN_FORMAT.md, "How the original build unified its sources"):

1. each source label (source, category, code) has the names its source gives, already split
   by the source's own convention (ADE20K comma lists, OpenSurfaces '/' lists; every other
   source one name per entry); names are lower-cased, scenes get ``-s`` and colours ``-c``,
   empty names and ``-`` are dropped, then the original synonym function is applied
   (:mod:`broden_builder.synonyms`);
2. labels are visited by descending frequency (ties: ascending (source, category, code));
   each claims every name of its list no earlier label holds, and is named by the first
   name it holds; a label holding none is merged into a holder: one name -> its holder;
   several -> the holder whose mean size (coverage / frequency) is closest to its own
   (ties: the more frequent holder, then the smaller holder (source, category, code));
   a label with no names is unlabeled;
3. per final name, frequency and coverage are summed over its source labels; names with
   frequency < ``min_frequency`` or coverage < ``min_coverage`` are dropped (mapped to 0);
   the rest are numbered 1.. by descending frequency, then coverage.

Rule ``curated`` (recipe ``unify: curated``) keeps this project's earlier tables
(:mod:`broden_builder.curated_names`): a preferred-name table, a merge blacklist, and
"labels sharing a name merge, the most frequent claiming first".

Two labels of one source and one category that end in one kept label are a *same-source
merge*: the distinction the source made is lost in the store. :func:`check_same_source`
refuses them unless the recipe allows it for that source (``allow_same_source_merges``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from .errors import BrodenError

from .curated_names import MERGE_BLACKLIST, PREFERRED_NAMES
from .synonyms import synonym_list

#: The recipe's ``unify`` values.
UNIFY_RULES = ("original", "curated")


class UnifyError(BrodenError, ValueError):
    """The vocabulary cannot be made as asked (an unknown rule, a refused same-source merge)."""


def normalize_name(name: str, category: str) -> str:
    """Lower-case and collapse spaces; scenes: '/' and ' - ' to '-' and a '-s' suffix; colours: '-c'.

    Empty names and '-' give '' (no name).
    """
    n = re.sub(r"\s+", " ", str(name).strip().lower())
    if n in ("", "-"):
        return ""
    if category == "scene":
        n = n.replace(" - ", "-").replace("/", "-")
        if not n.endswith("-s"):
            n += "-s"
    elif category == "color" and not n.endswith("-c"):
        n += "-c"
    return n


def split_synonyms(names: Sequence[str], separator: str = r",\s*") -> list:
    """Split names that are synonym lists (``'person, individual'``) on ``separator``, keeping order.

    Only for sources whose convention is a list per label (ADE20K ``objectnames``); see
    :meth:`broden_builder.sources.Source.split_names`.
    """
    out = []
    for entry in names:
        for part in re.split(separator, str(entry)):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


@dataclass
class SourceLabel:
    """A label of one source in one category, with its native-resolution statistics.

    ``names``: the label's names after the source's own splitting convention, before any
    unification rule; ``raw``: the names exactly as the source gives them (defaults to
    ``names``); ``synonyms``: the final name list, set by :func:`unify`.
    """

    source: str
    category: str
    code: int
    names: tuple
    frequency: int = 0
    coverage: float = 0.0
    raw: tuple = ()
    synonyms: tuple = ()

    def __post_init__(self):
        self.names = tuple(self.names)
        self.raw = tuple(self.raw) or self.names

    @property
    def key(self) -> tuple:
        return (self.source, self.category, self.code)

    @property
    def mean_size(self) -> float:
        return self.coverage / self.frequency if self.frequency else 0.0


@dataclass
class GlobalLabel:
    """A unified label: name, synonyms, member source labels and (after numbering) its number.

    ``members[0]`` is the holder (the source label that claimed the name); ``claimed`` are
    the names its members claimed (``syns`` = those other than ``name``).
    """

    name: str
    syns: list = field(default_factory=list)
    members: list = field(default_factory=list)
    number: int = 0
    claimed: list = field(default_factory=list)
    reason: str = ""  # why it was dropped

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

    def same_source_groups(self) -> dict:
        """(source, category) -> members, for those contributing two or more source labels."""
        groups: dict = {}
        for m in self.members:
            groups.setdefault((m.source, m.category), []).append(m)
        return {k: v for k, v in groups.items() if len(v) > 1}

    def merge_record(self) -> dict:
        """JSON-ready description of the label's members (for build.json and the plan)."""
        sources = sorted({m.source for m in self.members})
        return {"number": self.number, "name": self.name, "cross_source": len(sources) > 1,
                "same_source": bool(self.same_source_groups()), "sources": sources,
                "members": [member_record(m) for m in self.members]}


def member_record(m: SourceLabel) -> dict:
    """One source label as JSON: source, category, code, raw names (``names``), frequency, coverage."""
    return {"source": m.source, "category": m.category, "code": m.code, "names": list(m.raw),
            "frequency": m.frequency, "coverage": m.coverage}


@dataclass
class Vocabulary:
    """The unifier's result: kept labels (numbered from 1), dropped ones, and source key -> number."""

    labels: list
    dropped: list
    mapping: dict  # (source, category, code) -> global number, 0 when dropped
    rule: str = "original"
    unlabeled: list = field(default_factory=list)  # source labels without any name

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

    def merges(self) -> list:
        """Every kept label joining two or more source labels, as JSON-ready records."""
        return [g.merge_record() for g in self.labels if len(g.members) > 1]

    def cross_source_merges(self) -> list:
        return [r for r in self.merges() if r["cross_source"]]

    def same_source_merges(self, allowed: Iterable[str] = ()) -> list:
        """(label, (source, category), members) for same-source merges of sources not in ``allowed``."""
        allowed = frozenset(allowed)
        out = []
        for g in self.labels:
            for (s, c), ms in sorted(g.same_source_groups().items()):
                if s not in allowed:
                    out.append((g, (s, c), ms))
        return out


def describe_member(m: SourceLabel) -> str:
    return f"{m.source}/{m.category}/{m.code} {'; '.join(m.raw)!r}"


def check_same_source(vocab: Vocabulary, allow) -> None:
    """Raise UnifyError listing every same-source merge of a source the recipe does not allow.

    ``allow``: True (every source), False/None (none) or source keys.
    """
    if allow is True:
        return
    bad = vocab.same_source_merges(allow or ())
    if not bad:
        return
    lines = [f"  {g.name!r}: " + " + ".join(describe_member(m) for m in ms) for g, _, ms in bad[:30]]
    if len(bad) > 30:
        lines.append(f"  ... and {len(bad) - 30} more")
    sources = sorted({s for _, (s, _c), _m in bad})
    raise UnifyError(
        f"{len(bad)} merge(s) would join two labels of the same source and category into one label, "
        f"losing a distinction the source makes:\n" + "\n".join(lines) +
        f"\nrename the labels in the source, or allow it in the recipe with "
        f"'allow_same_source_merges: [{', '.join(sources)}]'")


# --------------------------------------------------------------------------- name lists
def original_names(sl: SourceLabel) -> tuple:
    """Rule 1 + 3 of the original: lower-case/normalise, drop empty and '-', synonym function."""
    flat = [normalize_name(n, sl.category) for n in sl.names]
    return synonym_list([n for n in flat if n])


def prepare_names(names: Sequence[str], category: str, preferred: Mapping[str, str] = PREFERRED_NAMES) -> tuple:
    """``unify: curated``: normalised names of a source label, the curated preferred name first."""
    flat = [normalize_name(n, category) for n in names]
    flat = [n for n in flat if n]
    for n in list(flat):
        p = preferred.get(n)
        if p:
            p = normalize_name(p, category)
            if p in flat:
                flat.remove(p)
            flat.insert(0, p)
            break
    return tuple(dict.fromkeys(flat))


# --------------------------------------------------------------------------- claiming
def _claim_original(items: list, reserved: Mapping[str, int]) -> tuple:
    """Rule 4 of the original. Returns (global labels in creation order, unlabeled source labels)."""
    holder: dict = {}  # name -> GlobalLabel
    made: list = []
    unlabeled: list = []
    for name in sorted(reserved, key=lambda n: reserved[n]):
        holder[name] = GlobalLabel(name=name, claimed=[name])
        made.append(holder[name])
    for sl in items:
        names = sl.synonyms
        if not names:
            unlabeled.append(sl)
            continue
        mine = [n for n in names if n not in holder]
        if names[0] in reserved:  # an existing label keeps its name and number (broden add)
            g = holder[names[0]]
        elif mine:
            g = GlobalLabel(name=mine[0])
            made.append(g)
        else:
            candidates = []
            for n in names:
                if not any(holder[n] is c for c in candidates):
                    candidates.append(holder[n])
            g = candidates[0]
            if len(candidates) > 1:
                own = sl.mean_size

                def key(h):
                    first = h.members[0] if h.members else None
                    size = first.mean_size if first else own
                    freq = first.frequency if first else 0
                    # closest mean size, then the more frequent holder, then the holder's (source, category, code)
                    return (abs(size - own), -freq, first.key if first else ())
                g = min(candidates, key=key)
        g.members.append(sl)
        for n in mine:
            holder[n] = g
            g.claimed.append(n)
    return made, unlabeled


def _claim_curated(items: list, reserved: Mapping[str, int], blacklist: frozenset) -> tuple:
    """``unify: curated``: the first shared name (blacklisted synonyms excepted) merges."""
    claimed: dict = {}
    made: list = []
    for name in sorted(reserved, key=lambda n: reserved[n]):
        claimed[name] = GlobalLabel(name=name, claimed=[name])
        made.append(claimed[name])
    unlabeled = []
    for sl in items:
        names = sl.synonyms
        if not names:
            unlabeled.append(sl)
            continue
        target = claimed[names[0]] if names[0] in reserved else None
        for i, n in enumerate(names):
            if target is not None:
                break
            if (i > 0 and n in blacklist) or n not in claimed:
                continue
            target = claimed[n]
        if target is None:
            target = GlobalLabel(name=names[0])
            made.append(target)
        target.members.append(sl)
        for i, n in enumerate(names):
            if (i > 0 and n in blacklist) or n in claimed:
                continue
            claimed[n] = target
            target.claimed.append(n)
    return made, unlabeled


def _filter(made: list, reserved: Mapping[str, int], min_frequency: int, min_coverage: float) -> tuple:
    """(kept, dropped) final labels: reserved ones always kept; others need frequency >= min_frequency and
    coverage >= min_coverage (rule 5 of the original build); a dropped label records its reason."""
    kept, dropped = [], []
    for g in made:
        if g.name in reserved:
            kept.append(g)
        elif g.frequency < min_frequency:
            g.reason = f"frequency {g.frequency} < min_frequency {min_frequency}"
            dropped.append(g)
        elif g.coverage < min_coverage:
            g.reason = f"coverage {g.coverage:g} < min_coverage {min_coverage:g}"
            dropped.append(g)
        else:
            kept.append(g)
    return kept, dropped


def _number(kept: list, reserved: Mapping[str, int], order: Mapping[int, int]) -> list:
    """Reserved labels keep their numbers; new ones follow the largest, by descending frequency, then
    coverage, then visit order. Returns the labels sorted by number."""
    fixed = [g for g in kept if g.name in reserved]
    new = [g for g in kept if g.name not in reserved]
    for g in fixed:
        g.number = reserved[g.name]
    new.sort(key=lambda g: (-g.frequency, -g.coverage, order[id(g)]))
    start = max(reserved.values(), default=0) + 1
    for i, g in enumerate(new):
        g.number = start + i
    return sorted(fixed + new, key=lambda g: g.number)


def unify(
    source_labels: Iterable[SourceLabel],
    min_frequency: int = 10,
    min_coverage: float = 0.5,
    rule: str = "original",
    reserved: Optional[Mapping[str, int]] = None,
    preferred: Mapping[str, str] = PREFERRED_NAMES,
    blacklist: Iterable[str] = MERGE_BLACKLIST,
) -> Vocabulary:
    """Merge, filter and number source labels by ``rule`` (``original`` or ``curated``). Deterministic.

    ``reserved`` (name -> number) fixes numbers of labels that already exist (``broden add``):
    each reserved name is its own label that keeps its name and number whatever the
    frequencies; a source label whose first name is reserved joins that label and claims its
    other names, before any other source label is visited. New labels are numbered after
    the largest reserved one. Reserved labels that no source label joins are left out.
    Raises UnifyError for an unknown rule.
    """
    if rule not in UNIFY_RULES:
        raise UnifyError(f"unknown unify rule {rule!r}; use one of {', '.join(UNIFY_RULES)}")
    reserved = dict(reserved or {})
    items = [sl for sl in source_labels if sl.frequency > 0 or reserved]
    for sl in items:
        own = prepare_names(sl.names, sl.category, {})
        if own and own[0] in reserved:
            sl.synonyms = own  # an existing label keeps its own names
        elif rule == "original":
            sl.synonyms = original_names(sl)
        else:
            sl.synonyms = prepare_names(sl.names, sl.category, preferred)
    # visit order: existing (reserved) labels first, then descending frequency, ties (source, category, code)
    items.sort(key=lambda s: (not (s.synonyms and s.synonyms[0] in reserved),
                              reserved.get(s.synonyms[0], 0) if s.synonyms else 0,
                              -s.frequency, s.source, s.category, s.code))
    if rule == "original":
        made, unlabeled = _claim_original(items, reserved)
    else:
        made, unlabeled = _claim_curated(items, reserved, frozenset(blacklist))
    order = {id(g): i for i, g in enumerate(made)}
    made = [g for g in made if g.members]
    for g in made:
        g.syns = [n for n in g.claimed if n != g.name]
    kept, dropped = _filter(made, reserved, min_frequency, min_coverage)
    kept = _number(kept, reserved, order)
    mapping = {}
    for g in kept:
        for m in g.members:
            mapping[m.key] = g.number
    for g in dropped:
        for m in g.members:
            mapping[m.key] = 0
    for m in unlabeled:
        mapping[m.key] = 0
    return Vocabulary(labels=kept, dropped=dropped, mapping=mapping, rule=rule, unlabeled=unlabeled)
