"""The result of dissecting one layer, and reading it back from ``O/<layer>/``.

Files (written by dissect.outputs.write_layer_result): ``result.json``, ``tally.csv``,
``iou.npy`` float32 [U, L] (columns = result.json "labels"), ``thresholds.npy`` float32 [U],
``topk.npz`` (``indices`` int64 [U, k] rows of index.csv, ``values`` float32 [U, k], ``maps``
float16 [U, k, h, w]).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

RESULT_FILES = ("result.json", "tally.csv", "iou.npy", "thresholds.npy", "topk.npz")


@dataclass
class LayerResult:
    """Everything known about one dissected layer (see result.json for the field meanings)."""

    layer: str
    iou: np.ndarray  # float32 [U, L]
    thresholds: np.ndarray  # float32 [U]
    labels: list  # [{"number", "name", "category"}] = columns of iou
    units: list  # per-unit dicts, unit_index order
    summary: dict
    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    store: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    version: str = ""
    topk_indices: Optional[np.ndarray] = None  # int64 [U, k]
    topk_values: Optional[np.ndarray] = None  # float32 [U, k]
    topk_maps: Optional[np.ndarray] = None  # float16 [U, k, h, w]
    path: Optional[Path] = None

    @property
    def categories(self) -> list:
        return list(self.summary.get("per_category", {}))

    def detectors(self) -> list:
        """The units whose best IoU reaches the threshold, best first."""
        return sorted((u for u in self.units if u["detector"]), key=lambda u: (-u["iou"], u["unit_index"]))

    def summary_line(self) -> str:
        """E.g. ``layer4: 143/512 units are detectors (object 61, texture 40, color 20, ...)``."""
        s = self.summary
        order = {c: i for i, c in enumerate(s.get("per_category", {}))}
        parts = sorted(((c, n) for c, n in s.get("per_category", {}).items() if n),
                       key=lambda cn: (-cn[1], order[cn[0]]))
        inner = ", ".join(f"{c} {n}" for c, n in parts)
        return f"{self.layer}: {s['detectors']}/{s['units']} units are detectors" + (f" ({inner})" if inner else "")

    def to_json(self) -> dict:
        return {
            "layer": self.layer, "model": self.model, "store": self.store, "settings": self.settings,
            "labels": self.labels, "units": self.units, "summary": self.summary,
            "timings": self.timings, "version": self.version,
        }


def load_result(directory: Union[str, Path], load_maps: bool = True) -> LayerResult:
    """Read ``O/<layer>/``; raises FileNotFoundError naming a missing file, ValueError for a bad one."""
    d = Path(directory)
    for name in ("result.json", "iou.npy", "thresholds.npy"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} is missing (not a dissection result folder?)")
    try:
        doc = json.loads((d / "result.json").read_text("utf-8"))
    except ValueError as e:
        raise ValueError(f"{d / 'result.json'}: not valid JSON ({e})") from None
    iou = np.load(d / "iou.npy")
    thr = np.load(d / "thresholds.npy")
    if iou.shape != (len(doc["units"]), len(doc["labels"])):
        raise ValueError(f"{d / 'iou.npy'}: shape {iou.shape} does not match result.json "
                         f"({len(doc['units'])} units x {len(doc['labels'])} labels)")
    res = LayerResult(
        layer=doc["layer"], iou=iou, thresholds=thr, labels=doc["labels"], units=doc["units"],
        summary=doc["summary"], settings=doc.get("settings", {}), model=doc.get("model", {}),
        store=doc.get("store", {}), timings=doc.get("timings", {}), version=doc.get("version", ""), path=d,
    )
    if (d / "topk.npz").is_file():
        with np.load(d / "topk.npz") as z:
            res.topk_indices = z["indices"]
            res.topk_values = z["values"]
            if load_maps and "maps" in z:
                res.topk_maps = z["maps"]
    return res
