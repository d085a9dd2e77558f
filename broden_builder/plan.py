"""``broden build RECIPE --plan``: the vocabulary a build would produce, from source metadata alone.

Sources that implement :meth:`Source.plan_statistics` report ``{(category, code): (images,
coverage)}`` without reading any image. The plan feeds those counts to the same unifier the
build uses (names, merges, ``min_frequency``, ``min_coverage``) and reports labels per category.

Where the metadata has no pixel coverage (``coverage`` None, e.g. ADE20K objects and parts),
every such label's mean size is taken as equal (coverage = frequency: one whole image per
image), so a merge among several holders falls to the more frequent one, as the original
would with equal sizes, and ``min_coverage`` cannot be applied: the plan's count for those
categories is an upper bound (only ``min_frequency`` filtered). Sources without metadata
counts, and colour (computed from pixels), are listed as not counted.

``--json`` adds the vocabulary: every kept label (number, name, categories with
frequencies, members with their raw names under ``names``), every dropped label with the
reason, and the same-source merges the recipe would refuse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from .recipe import Recipe
from .sources import Source, SourceMissingError
from .unify import SourceLabel, member_record, unify

COVERAGE_RULE = ("labels whose pixel coverage is not in the metadata are treated as having equal mean sizes "
                 "(coverage = frequency), so merges among several holders go to the more frequent holder, and as "
                 "meeting min_coverage; their categories' counts are upper bounds (min_frequency applied)")


@dataclass
class Plan:
    """Planned labels per category, with what was and was not counted."""

    categories: dict = field(default_factory=dict)  # category -> kept label count
    dropped: dict = field(default_factory=dict)  # category -> dropped label count
    upper_bound: list = field(default_factory=list)  # categories with unknown coverage
    sources: dict = field(default_factory=dict)  # source key -> {"status", "labels": {cat: n}}
    not_counted: list = field(default_factory=list)
    min_frequency: int = 10
    min_coverage: float = 0.5
    unify: str = "original"
    vocabulary: list = field(default_factory=list)  # kept labels (JSON records)
    dropped_labels: list = field(default_factory=list)  # dropped labels (JSON records with "reason")
    refused_merges: list = field(default_factory=list)  # same-source merges the recipe does not allow

    def to_json(self) -> dict:
        return {"categories": dict(self.categories), "dropped": dict(self.dropped),
                "upper_bound_categories": list(self.upper_bound), "coverage_rule": COVERAGE_RULE,
                "min_frequency": self.min_frequency, "min_coverage": self.min_coverage,
                "unify": self.unify, "sources": self.sources, "not_counted": list(self.not_counted),
                "vocabulary": {"labels": self.vocabulary, "dropped": self.dropped_labels,
                               "refused_same_source_merges": self.refused_merges}}

    def summary(self) -> str:
        lines = [f"plan (metadata only; min_frequency {self.min_frequency}, min_coverage {self.min_coverage}):"]
        for c, n in self.categories.items():
            mark = " (upper bound: coverage unknown)" if c in self.upper_bound else ""
            lines.append(f"  {c:<10} {n:>6} {'label' if n == 1 else 'labels'} kept, {self.dropped.get(c, 0)} dropped{mark}")
        for key, info in self.sources.items():
            labs = ", ".join(f"{c} {n}" for c, n in info.get("labels", {}).items())
            lines.append(f"  source {key}: {info['status']}" + (f" ({labs} source labels)" if labs else ""))
        if self.not_counted:
            lines.append("  not counted from metadata: " + ", ".join(self.not_counted))
        if self.upper_bound:
            lines.append(f"  note: {COVERAGE_RULE}")
        if self.refused_merges:
            lines.append(f"  {len(self.refused_merges)} same-source merge(s) the recipe does not allow (a build "
                         f"would stop; see --json 'refused_same_source_merges'): "
                         + ", ".join(m["name"] for m in self.refused_merges[:10]))
        return "\n".join(lines)


def source_labels_from_plan(src: Source, stats: dict) -> tuple:
    """SourceLabel entries and the categories whose coverage was unknown.

    Unknown coverage (None) becomes coverage = frequency: every such label's mean size is 1.
    """
    vocab = src.vocabulary()
    out, unknown = [], set()
    for (cat, code), (images, cov) in sorted(stats.items()):
        names = vocab.get(cat, {}).get(code)
        if not names or images <= 0:
            continue
        if cov is None:
            unknown.add(cat)
            cov = float(images)
        split, raw = src.label_names(cat, names)
        out.append(SourceLabel(src.key, cat, int(code), split, int(images), float(cov), raw=raw))
    return out, unknown


def label_record(g) -> dict:
    """A kept or dropped label as JSON: number, name, syns, categories with frequencies, members."""
    counts = g.category_counts()
    rec = {"number": g.number, "name": g.name, "syns": list(g.syns),
           "categories": {c: counts[c] for c in sorted(counts, key=lambda c: (-counts[c], c))},
           "frequency": g.frequency, "coverage": g.coverage,
           "members": [member_record(m) for m in g.members]}
    if g.reason:
        rec["reason"] = g.reason
        del rec["number"]
    return rec


def plan_recipe(recipe: Recipe, sources: Optional[Sequence[Source]] = None) -> Plan:
    """Plan a recipe's vocabulary from metadata (missing sources are reported, not fatal)."""
    from .build import instantiate_sources

    sources = list(sources) if sources is not None else instantiate_sources(recipe)
    plan = Plan(min_frequency=recipe.min_frequency, min_coverage=recipe.min_coverage, unify=recipe.unify)
    labels, unknown = [], set()
    for src in sources:
        try:
            src.check()
        except SourceMissingError as e:
            plan.sources[src.key] = {"status": f"missing ({str(e).splitlines()[0]})"}
            plan.not_counted.append(src.key)
            continue
        stats = src.plan_statistics()
        if stats is None:
            plan.sources[src.key] = {"status": "no metadata counts (needs a build)"}
            plan.not_counted.append(src.key)
            continue
        sl, unk = source_labels_from_plan(src, stats)
        per: dict = {}
        for s in sl:
            per[s.category] = per.get(s.category, 0) + 1
        plan.sources[src.key] = {"status": "counted", "labels": dict(sorted(per.items()))}
        labels += sl
        unknown |= unk
    if recipe.color:
        plan.not_counted.append("color (from pixels; at most 11 labels)")
    vocab = unify(labels, recipe.min_frequency, recipe.min_coverage, rule=recipe.unify)
    plan.vocabulary = [label_record(g) for g in vocab.labels]
    plan.dropped_labels = [label_record(g) for g in vocab.dropped]
    for m in vocab.unlabeled:
        plan.dropped_labels.append({"name": "", "reason": "no name left after the synonym rule",
                                    "members": [member_record(m)]})
    allow = recipe.allow_same_source_merges
    if allow is not True:
        plan.refused_merges = [{"name": g.name, "source": s, "category": c,
                                "members": [member_record(m) for m in ms]}
                               for g, (s, c), ms in vocab.same_source_merges(allow or ())]
    plan.categories = dict(sorted(vocab.category_counts().items()))
    dropped: dict = {}
    for g in vocab.dropped:
        for c in {m.category for m in g.members}:
            dropped[c] = dropped.get(c, 0) + 1
    plan.dropped = dict(sorted(dropped.items()))
    plan.upper_bound = sorted(unknown)
    return plan
