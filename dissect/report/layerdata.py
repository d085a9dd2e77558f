"""Read what the report needs from one layer's results folder (``O/<layer>/``).

Reads the files of the shared output format directly (``result.json``, ``thresholds.npy``,
``topk.npz``); no import of the dissection runner is needed to draw a report.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np


class ReportInputError(ValueError):
    """A results folder is missing a file or holds one in the wrong shape; names the file."""


@dataclass
class LayerData:
    """One dissected layer: its result.json plus the thresholds and top-k arrays.

    ``units`` is result.json's unit list (unit_index order); ``maps`` is None when
    topk.npz is absent (the report then shows no images).
    """

    name: str
    folder: Path
    result: dict
    thresholds: np.ndarray  # float32 [U]
    topk_indices: Optional[np.ndarray] = None  # int64 [U, k]
    topk_values: Optional[np.ndarray] = None  # float32 [U, k]
    maps: Optional[np.ndarray] = None  # float16/32 [U, k, h, w]

    @property
    def units(self) -> list:
        return self.result.get("units", [])

    @property
    def categories(self) -> list:
        """Categories in store order (the settings' list, else the order they appear in)."""
        cats = list(self.result.get("settings", {}).get("categories") or [])
        for u in self.units:
            for c in list(u.get("per_category", {})) + [u.get("category")]:
                if c and c not in cats:
                    cats.append(c)
        return cats

    def sorted_units(self) -> list:
        """Units by IoU, best first (ties: smaller unit index first)."""
        return sorted(self.units, key=lambda u: (-float(u.get("iou", 0.0)), int(u["unit_index"])))


def _natural_key(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t != ""]


def find_layer_folders(out_dir) -> list:
    """Subfolders of ``out_dir`` holding a result.json, in natural name order (layer2 < layer10)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ReportInputError(f"{out_dir}: results folder does not exist")
    found = [p.parent for p in out_dir.glob("*/result.json")]
    return sorted(found, key=lambda p: _natural_key(p.name))


def read_layer(folder) -> LayerData:
    """Load one layer's results; raises ReportInputError naming the bad file."""
    folder = Path(folder)
    path = folder / "result.json"
    try:
        result = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ReportInputError(f"{path}: file is missing") from None
    except ValueError as e:
        raise ReportInputError(f"{path}: not valid JSON ({e})") from None
    units = result.get("units")
    if not isinstance(units, list):
        raise ReportInputError(f"{path}: 'units' must be a list")
    for i, u in enumerate(units):
        for key in ("unit_index", "label", "category", "iou"):
            if key not in u:
                raise ReportInputError(f"{path}: units[{i}] lacks {key!r}")
    n = len(units)
    tpath = folder / "thresholds.npy"
    if tpath.exists():
        thresholds = np.load(tpath, allow_pickle=False).astype(np.float32)
    else:
        thresholds = np.array([u.get("threshold", np.nan) for u in units], np.float32)
    if thresholds.shape != (n,):
        raise ReportInputError(f"{tpath}: shape {thresholds.shape} does not match {n} units in result.json")
    data = LayerData(name=str(result.get("layer") or folder.name), folder=folder, result=result, thresholds=thresholds)
    kpath = folder / "topk.npz"
    if kpath.exists():
        with np.load(kpath, allow_pickle=False) as z:
            missing = [k for k in ("indices", "maps") if k not in z.files]
            if missing:
                raise ReportInputError(f"{kpath}: lacks array(s) {missing}")
            idx, maps = z["indices"], z["maps"]
            vals = z["values"] if "values" in z.files else None
        if idx.ndim != 2 or idx.shape[0] != n:
            raise ReportInputError(f"{kpath}: 'indices' has shape {idx.shape}, expected [{n}, k]")
        if maps.ndim != 4 or maps.shape[:2] != idx.shape:
            raise ReportInputError(f"{kpath}: 'maps' has shape {maps.shape}, expected [{n}, {idx.shape[1]}, h, w]")
        data.topk_indices, data.topk_values, data.maps = idx.astype(np.int64), vals, maps
    return data
