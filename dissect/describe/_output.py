"""``O/<layer>/descriptions.csv`` (and ``descriptions.json``: settings), written atomically; read back.

descriptions.csv: one row per unit in unit order. ``unit`` is 1-based (as tally.csv); ``words``
the top 5 words, ``;``-joined, best first; ``similarity`` the best word's SoftWPMI;
``similarities`` the top 5's, ``;``-joined. Where the folder holds a dissection (result.json),
``iou_label`` is the unit's Network Dissection label and ``iou_label_in_top5`` 1 when that label
(without its category suffix) is among the words, else 0; both are empty otherwise. When some
IoU label was predicted by a segmentation model (not annotated), a last column
``iou_label_predicted_by`` names the model ("" for annotated labels).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional, Union

from broden_builder.shared import atomic_write_text

from ._vocabulary import label_word

CSV_NAME = "descriptions.csv"
JSON_NAME = "descriptions.json"
COLUMNS = ("unit", "words", "similarity", "similarities", "iou_label", "iou_label_in_top5")


def iou_labels(layer_dir: Path) -> Optional[dict]:
    """{unit (1-based): label} of the dissection in ``layer_dir`` (dissect.results), None without one."""
    from ..results import has_result, read_result_json

    if not has_result(layer_dir):
        return None
    return {int(u["unit_index"]) + 1: str(u["label"]) for u in read_result_json(layer_dir)["units"]}


def iou_predicted(layer_dir: Path) -> dict:
    """{unit (1-based): "MODEL"} of the units whose IoU label a segmentation model predicted ({} if none)."""
    from ..results import has_result, label_predicted_by, read_result_json

    if not has_result(layer_dir):
        return {}
    doc = read_result_json(layer_dir)
    out = {int(u["unit_index"]) + 1: label_predicted_by(doc, u) for u in doc["units"]}
    return {u: m for u, m in out.items() if m}


def in_top(label: str, words) -> bool:
    """Whether a store label (suffix removed, lower case) is one of ``words`` (compared in lower case)."""
    return bool(label) and label_word(label) in {w.strip().lower() for w in words}


def descriptions_csv_text(rows, labels: Optional[dict], predicted: Optional[dict] = None) -> str:
    """The CSV text of ``rows`` (unit, words, scores) with the IoU labels where given; ``predicted``
    ({unit: MODEL}, non-empty): the ``iou_label_predicted_by`` column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS + (("iou_label_predicted_by",) if predicted else ()))
    for r in rows:
        lab = (labels or {}).get(r["unit"], "")
        hit = "" if labels is None else int(in_top(lab, r["words"]))
        w.writerow(
            [
                r["unit"],
                ";".join(r["words"]),
                f"{r['scores'][0]:.6g}",
                ";".join(f"{s:.6g}" for s in r["scores"]),
                lab,
                hit,
            ]
            + ([predicted.get(r["unit"], "")] if predicted else [])
        )
    return buf.getvalue()


def write_descriptions(layer_dir: Union[str, Path], rows, settings: dict) -> dict:
    """Write descriptions.csv and descriptions.json into ``layer_dir``; returns the agreement
    summary {units, with_label, label_in_top5} (the last two None without a dissection)."""
    d = Path(layer_dir)
    d.mkdir(parents=True, exist_ok=True)
    labels = iou_labels(d)
    summary = {"units": len(rows), "with_label": None, "label_in_top5": None}
    if labels is not None:
        labelled = [r for r in rows if labels.get(r["unit"])]
        summary["with_label"] = len(labelled)
        summary["label_in_top5"] = sum(1 for r in labelled if in_top(labels[r["unit"]], r["words"]))
    atomic_write_text(d / CSV_NAME, descriptions_csv_text(rows, labels, iou_predicted(d)))
    atomic_write_text(
        d / JSON_NAME,
        json.dumps({"settings": settings, "agreement": summary}, indent=1, sort_keys=True, default=str) + "\n",
    )
    return summary


def read_descriptions(layer_dir: Union[str, Path]) -> dict:
    """{unit (1-based): {"words": [...], "similarity": float, "iou_label": str, "in_top5": bool or None}}
    from ``layer_dir/descriptions.csv``; {} when there is none. Raises ValueError when malformed."""
    path = Path(layer_dir) / CSV_NAME
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                hit = row.get("iou_label_in_top5", "")
                out[int(row["unit"])] = {
                    "words": [w for w in row["words"].split(";") if w],
                    "similarity": float(row["similarity"]),
                    "iou_label": row.get("iou_label", ""),
                    "in_top5": None if hit in ("", None) else bool(int(hit)),
                }
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: line {n}: {e}") from None
    return out


__all__ = ["CSV_NAME", "JSON_NAME", "iou_labels", "in_top", "write_descriptions", "read_descriptions"]
