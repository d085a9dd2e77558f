"""``O/<name>/explanations.csv`` (and ``explanations.json`` with the settings), written as one commit.

Both files are staged and renamed together (dissect.results.commit_files) under the ``--out``
lock; explanations.json, renamed last, records the sha256 of the csv it belongs to, so a reader
refuses a csv of one run beside the json of another.

explanations.csv: one row per unit in unit order; ``unit`` is 1-based (as tally.csv),
``formula`` uses label names with AND, OR, AND NOT and parentheses (empty when the unit meets
no label), ``iou`` is the formula's IoU and ``single_iou`` the best single label's, both over
the whole probe set (compexp's IoU), then ``single_label`` and ``length`` (labels in the formula);
on a store with labels a segmentation model predicted, a last column ``predicted_by`` names them
("name: MODEL; ...", empty when the formula's labels are all annotated).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Union

from ..results import commit_files

COLUMNS = ("unit", "formula", "iou", "single_iou", "single_label", "length")
CSV_NAME = "explanations.csv"
JSON_NAME = "explanations.json"


def explanations_csv_text(rows, predicted: bool = False) -> str:
    """The csv text of ``rows`` (LayerExplanations.rows()); ``predicted``: add the ``predicted_by`` column."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS + (("predicted_by",) if predicted else ()))
    for r in rows:
        w.writerow(
            [
                r["unit"],
                r["formula"],
                repr(float(r["iou"])),
                repr(float(r["single_iou"])),
                r["single_label"],
                r["length"],
            ]
            + ([r.get("predicted", "")] if predicted else [])
        )
    return buf.getvalue()


def write_explanations(directory: Union[str, Path], explanations) -> Path:
    """Write explanations.csv and explanations.json (settings, timings, the csv's sha256) of a
    LayerExplanations in one commit (call it holding the lock of the results folder)."""
    d = Path(directory)
    text = explanations_csv_text(explanations.rows(), predicted=bool(getattr(explanations, "predicted", None)))
    doc = {
        "settings": explanations.settings,
        "timings": explanations.timings,
        "method": "compositional explanations (Mu & Andreas, NeurIPS 2020), beam search as jayelm/compexp",
        "csv_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    commit_files(d, {CSV_NAME: text, JSON_NAME: json.dumps(doc, indent=1, default=str) + "\n"})
    return d / CSV_NAME


def _check_pair(path: Path) -> None:
    """Refuse an explanations.csv that is not the one explanations.json records (an interrupted commit)."""
    try:
        want = json.loads((path.parent / JSON_NAME).read_text("utf-8")).get("csv_sha256")
    except (OSError, ValueError, AttributeError):
        return  # no json (older results) or unreadable: the csv alone is read as before
    if want and hashlib.sha256(path.read_bytes()).hexdigest() != want:
        raise ValueError(
            f"{path}: is not the file {path.parent / JSON_NAME} records (an interrupted or concurrent "
            f"write); run dissect explain again"
        )


def read_explanations(directory: Union[str, Path]) -> dict:
    """{unit (1-based): row dict} from ``directory/explanations.csv``; {} when there is none.
    Raises ValueError naming the file and row for a malformed file."""
    path = Path(directory) / CSV_NAME
    if not path.is_file():
        return {}
    _check_pair(path)
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        for i, r in enumerate(reader, start=2):
            try:
                u = int(r["unit"])
                out[u] = {
                    "unit": u,
                    "formula": r["formula"],
                    "iou": float(r["iou"]),
                    "single_iou": float(r["single_iou"]),
                    "single_label": r.get("single_label", ""),
                    "length": int(r.get("length") or 0),
                    "predicted_by": r.get("predicted_by") or "",
                }
            except ValueError as e:
                raise ValueError(f"{path}, row {i}: {e}") from None
    return out
