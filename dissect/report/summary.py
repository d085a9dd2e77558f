"""Counts shown by the reports, computed from result.json's unit list."""
from __future__ import annotations

from typing import Sequence

from ..results import constant_summary, constant_text


#: Broden's category suffixes (colours ``red-c``, scenes ``street-s``), left out of display names
SUFFIXES = ("-c", "-s")


def display_name(label: str) -> str:
    """A label as shown to readers: without Broden's suffix (``red-c`` -> ``red``); the raw label
    stays in result.json, tally.csv and the pages' tooltips."""
    for suffix in SUFFIXES:
        if label.endswith(suffix) and len(label) > len(suffix):
            return label[:-len(suffix)]
    return label


def is_detector(unit: dict, iou_threshold: float = 0.04) -> bool:
    """The unit's own ``detector`` flag when present, else IoU >= the threshold."""
    if "detector" in unit:
        return bool(unit["detector"])
    return float(unit.get("iou", 0.0)) >= iou_threshold


def layer_summary(units: Sequence[dict], categories: Sequence[str], iou_threshold: float = 0.04) -> dict:
    """Detector counts of one layer.

    Returns ``{"units", "detectors", "per_category": {cat: detector units},
    "unique": {cat: distinct labels among them}, "concepts": {cat: {label: detector units}},
    "constant": units with one value over the probe set, "constant_values": {value: units},
    "constant_text": those in words ('' when none)}``, with every category of ``categories``
    present (zero when it has no detector). A constant unit is never counted as a detector.
    """
    cats = list(categories)
    concepts: dict = {c: {} for c in cats}
    det = 0
    for u in units:
        if u.get("constant") or not is_detector(u, iou_threshold):
            continue
        det += 1
        c = u["category"]
        concepts.setdefault(c, {})
        concepts[c][u["label"]] = concepts[c].get(u["label"], 0) + 1
    out = {
        "units": len(units),
        "detectors": det,
        "per_category": {c: sum(v.values()) for c, v in concepts.items()},
        "unique": {c: len(v) for c, v in concepts.items()},
        "concepts": concepts,
    }
    out.update(constant_summary(units))
    out["constant_text"] = constant_text(out)
    return out


def summary_line(layer: str, summary: dict) -> str:
    """``layer4: 143/512 units are detectors (object 61, ...; unique: object 20, ...)``."""
    per = ", ".join(f"{c} {n}" for c, n in summary["per_category"].items() if n)
    uniq = ", ".join(f"{c} {n}" for c, n in summary["unique"].items() if n)
    text = f"{layer}: {summary['detectors']}/{summary['units']} units are detectors"
    if per:
        text += f" ({per}; unique concepts: {uniq})"
    if summary.get("constant_text"):
        text += f"; {summary['constant_text']}"
    return text
