"""``broden build RECIPE --plan``: the vocabulary a build would produce, from source metadata alone.

Sources that implement :meth:`Source.plan_statistics` report ``{(category, code): (images,
coverage)}`` without reading any image. The plan feeds those counts to the same unifier the
build uses (names, merges, ``min_frequency``, ``min_coverage``) and reports labels per category.

Where the metadata has no pixel coverage (``coverage`` None, e.g. ADE20K objects and parts),
``min_coverage`` cannot be applied: such labels are treated as passing it, so the plan's count
for their category is an upper bound (only ``min_frequency`` filtered). Sources without
metadata counts, and colour (computed from pixels), are listed as not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .recipe import Recipe
from .sources import Source, SourceMissingError
from .unify import SourceLabel, unify

COVERAGE_RULE = ("labels whose pixel coverage is not in the metadata are treated as meeting min_coverage; "
                 "their categories' counts are upper bounds (min_frequency applied)")


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

    def to_json(self) -> dict:
        return {"categories": dict(self.categories), "dropped": dict(self.dropped),
                "upper_bound_categories": list(self.upper_bound), "coverage_rule": COVERAGE_RULE,
                "min_frequency": self.min_frequency, "min_coverage": self.min_coverage,
                "sources": self.sources, "not_counted": list(self.not_counted)}

    def summary(self) -> str:
        lines = [f"plan (metadata only; min_frequency {self.min_frequency}, min_coverage {self.min_coverage}):"]
        for c, n in self.categories.items():
            mark = " (upper bound: coverage unknown)" if c in self.upper_bound else ""
            lines.append(f"  {c:<10} {n:>6} labels kept, {self.dropped.get(c, 0)} dropped{mark}")
        for key, info in self.sources.items():
            labs = ", ".join(f"{c} {n}" for c, n in info.get("labels", {}).items())
            lines.append(f"  source {key}: {info['status']}" + (f" ({labs} source labels)" if labs else ""))
        if self.not_counted:
            lines.append("  not counted from metadata: " + ", ".join(self.not_counted))
        if self.upper_bound:
            lines.append(f"  note: {COVERAGE_RULE}")
        return "\n".join(lines)


def source_labels_from_plan(src: Source, stats: dict) -> tuple:
    """SourceLabel entries (coverage None -> inf) and the categories whose coverage was unknown."""
    vocab = src.vocabulary()
    out, unknown = [], set()
    for (cat, code), (images, cov) in sorted(stats.items()):
        names = vocab.get(cat, {}).get(code)
        if not names or images <= 0:
            continue
        if cov is None:
            unknown.add(cat)
            cov = math.inf
        out.append(SourceLabel(src.key, cat, int(code), tuple([names] if isinstance(names, str) else names),
                               int(images), float(cov)))
    return out, unknown


def plan_recipe(recipe: Recipe, sources: Optional[Sequence[Source]] = None) -> Plan:
    """Plan a recipe's vocabulary from metadata (missing sources are reported, not fatal)."""
    from .build import instantiate_sources

    sources = list(sources) if sources is not None else instantiate_sources(recipe)
    plan = Plan(min_frequency=recipe.min_frequency, min_coverage=recipe.min_coverage)
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
    vocab = unify(labels, recipe.min_frequency, recipe.min_coverage)
    plan.categories = dict(sorted(vocab.category_counts().items()))
    dropped: dict = {}
    for g in vocab.dropped:
        for c in {m.category for m in g.members}:
            dropped[c] = dropped.get(c, 0) + 1
    plan.dropped = dict(sorted(dropped.items()))
    plan.upper_bound = sorted(unknown)
    return plan
