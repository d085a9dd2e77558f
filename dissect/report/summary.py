"""How the reports name labels and say a layer's counts (the counts: dissect.results.summarise)."""

from __future__ import annotations

from ..results import constant_text


#: Broden's category suffixes (colours ``red-c``, scenes ``street-s``), left out of display names
SUFFIXES = ("-c", "-s")


def display_name(label: str) -> str:
    """A label as shown to readers: without Broden's suffix (``red-c`` -> ``red``); the raw label
    stays in result.json, tally.csv and the pages' tooltips."""
    for suffix in SUFFIXES:
        if label.endswith(suffix) and len(label) > len(suffix):
            return label[: -len(suffix)]
    return label


def summary_line(layer: str, summary: dict, what: str = "unit") -> str:
    """``layer4: 143/512 units are detectors (object 61, ...; unique: object 20, ...)`` of a
    dissect.results.summarise summary; ``what``: "unit", or "feature" for an SAE's features."""
    per = ", ".join(f"{c} {n}" for c, n in summary["per_category"].items() if n)
    uniq = ", ".join(f"{c} {n}" for c, n in summary["unique_detectors"].items() if n)
    text = f"{layer}: {summary['detectors']}/{summary['units']} {what}s are detectors"
    if per:
        text += f" ({per}; unique concepts: {uniq})"
    if "significant" in summary:  # the permutation null ran (--null N)
        text += f"; {summary['significant']} significant against the permutation null"
    if summary.get("constant"):
        text += f"; {constant_text(summary, what)}"
    return text
