"""``O/<name>/explanations.csv`` (and ``explanations.json`` with the settings), written atomically.

explanations.csv: one row per unit in unit order; ``unit`` is 1-based (as tally.csv),
``formula`` uses label names with AND, OR, AND NOT and parentheses (empty when the unit meets
no label), ``iou`` is the formula's IoU and ``single_iou`` the best single label's, both over
the whole probe set (compexp's IoU), then ``single_label`` and ``length`` (labels in the formula).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Union

from broden_builder.shared import atomic_write_text

COLUMNS = ("unit", "formula", "iou", "single_iou", "single_label", "length")
CSV_NAME = "explanations.csv"
JSON_NAME = "explanations.json"


def explanations_csv_text(rows) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([r["unit"], r["formula"], repr(float(r["iou"])), repr(float(r["single_iou"])), r["single_label"],
                    r["length"]])
    return buf.getvalue()


def write_explanations(directory: Union[str, Path], explanations) -> Path:
    """Write explanations.csv and explanations.json (settings, timings) of a LayerExplanations."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / CSV_NAME, explanations_csv_text(explanations.rows()))
    doc = {"settings": explanations.settings, "timings": explanations.timings,
           "method": "compositional explanations (Mu & Andreas, NeurIPS 2020), beam search as jayelm/compexp"}
    atomic_write_text(d / JSON_NAME, json.dumps(doc, indent=1, default=str) + "\n")
    return d / CSV_NAME


def read_explanations(directory: Union[str, Path]) -> dict:
    """{unit (1-based): row dict} from ``directory/explanations.csv``; {} when there is none.
    Raises ValueError naming the file and row for a malformed file."""
    path = Path(directory) / CSV_NAME
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        for i, r in enumerate(reader, start=2):
            try:
                u = int(r["unit"])
                out[u] = {"unit": u, "formula": r["formula"], "iou": float(r["iou"]),
                          "single_iou": float(r["single_iou"]), "single_label": r.get("single_label", ""),
                          "length": int(r.get("length") or 0)}
            except ValueError as e:
                raise ValueError(f"{path}, row {i}: {e}") from None
    return out
