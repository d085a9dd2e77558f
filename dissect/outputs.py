"""Turn tallied counts into unit labels and write ``O/<layer>/`` (all files atomically)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from broden_builder.store.atomic import atomic_write_bytes, atomic_write_text

from .results import LayerResult


def summarise(units: Sequence[dict], categories: Sequence[str]) -> dict:
    """result.json's "summary": units, detectors, detectors and unique labels per category."""
    det = [x for x in units if x["detector"]]
    return {
        "units": len(units),
        "detectors": len(det),
        "per_category": {c: sum(1 for x in det if x["category"] == c) for c in categories},
        "unique_detectors": {c: len({x["number"] for x in det if x["category"] == c}) for c in categories},
    }


def build_layer_result(
    layer: str,
    tally,
    union: str,
    iou_threshold: float,
    label_names: dict,
    thresholds: np.ndarray,
    settings: Optional[dict] = None,
    model: Optional[dict] = None,
    store: Optional[dict] = None,
    timings: Optional[dict] = None,
    version: str = "",
    topk: Optional[tuple] = None,
) -> LayerResult:
    """Score a finished dissect.stats.Tally (via dissect.stats.scores) into a LayerResult."""
    from .stats import scores

    units = scores(tally, union=union, iou_threshold=iou_threshold, label_names=label_names)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    for u in units:
        u["threshold"] = float(thresholds[u["unit_index"]])
    labels = [{"number": n, "name": label_names.get(n, str(n)), "category": c}
              for n, c in zip(tally.labels, tally.primary)]
    iou = tally.iou(union).cpu().numpy().astype(np.float32)
    res = LayerResult(layer=layer, iou=iou, thresholds=thresholds, labels=labels, units=units,
                      summary=summarise(units, tally.categories), settings=dict(settings or {}),
                      model=dict(model or {}), store=dict(store or {}), timings=dict(timings or {}), version=version)
    if topk is not None:
        res.topk_indices, res.topk_values, res.topk_maps = topk
    return res


def tally_csv_text(res: LayerResult) -> str:
    """tally.csv of the original tools: one row per unit, best IoU first (ties: lower unit)."""
    cats = list(res.summary["per_category"])
    header = ["unit", "category", "label", "score"]
    for c in cats:
        header += [f"{c}-label", f"{c}-truth", f"{c}-activation", f"{c}-intersect", f"{c}-iou"]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for u in sorted(res.units, key=lambda x: (-x["iou"], x["unit_index"])):
        row = [u["unit"], u["category"], u["label"], repr(u["iou"])]
        for c in cats:
            p = u["per_category"][c]
            row += [p["label"], p["truth"], p["activation"], p["intersect"], repr(p["iou"])]
        w.writerow(row)
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_layer_result(directory: Union[str, Path], res: LayerResult) -> Path:
    """Write result.json, tally.csv, iou.npy, thresholds.npy, topk.npz under ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / "iou.npy", _npy_bytes(np.asarray(res.iou, dtype=np.float32)))
    atomic_write_bytes(d / "thresholds.npy", _npy_bytes(np.asarray(res.thresholds, dtype=np.float32)))
    if res.topk_indices is not None:
        buf = io.BytesIO()
        np.savez(buf, indices=np.asarray(res.topk_indices, dtype=np.int64),
                 values=np.asarray(res.topk_values, dtype=np.float32),
                 maps=np.asarray(res.topk_maps, dtype=np.float16))
        atomic_write_bytes(d / "topk.npz", buf.getvalue())
    atomic_write_text(d / "tally.csv", tally_csv_text(res))
    atomic_write_text(d / "result.json", json.dumps(res.to_json(), indent=1, allow_nan=False) + "\n")
    res.path = d
    return d
