"""A results folder fabricated in the exact dissection output format (for the report tests)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]


def fabricate_layer(out: Path, layer: str, store_path: Path, n_images: int, units: list, k: int = 3,
                    hw: tuple = (8, 8), seed: int = 0) -> dict:
    """Write O/<layer>/{result.json, thresholds.npy, topk.npz, iou.npy, tally.csv}.

    ``units``: list of (label, category, iou, detector) in unit_index order. Returns the arrays.
    """
    rng = np.random.default_rng(seed)
    d = out / layer
    d.mkdir(parents=True, exist_ok=True)
    u_n = len(units)
    labels = sorted({(lab, cat) for lab, cat, _, _ in units})
    label_rows = [{"number": i + 1, "name": lab, "category": cat} for i, (lab, cat) in enumerate(labels)]
    number = {lab: i + 1 for i, (lab, _) in enumerate(labels)}
    thresholds = rng.uniform(0.5, 1.5, u_n).astype(np.float32)
    indices = np.stack([rng.choice(n_images, size=k, replace=False) for _ in range(u_n)]).astype(np.int64)
    maps = rng.uniform(0, 2, (u_n, k) + tuple(hw)).astype(np.float16)
    values = maps.reshape(u_n, k, -1).max(-1).astype(np.float32)
    iou = rng.uniform(0, 0.01, (u_n, len(labels))).astype(np.float32)
    unit_dicts = []
    for i, (lab, cat, v, det) in enumerate(units):
        iou[i, number[lab] - 1] = v
        per = {c: {"label": lab if c == cat else "", "number": number[lab] if c == cat else 0,
                   "iou": v if c == cat else 0.0, "truth": 10, "activation": 5, "intersect": 2} for c in CATEGORIES}
        unit_dicts.append({"unit_index": i, "unit": i + 1, "label": lab, "number": number[lab], "category": cat,
                           "iou": v, "detector": det, "threshold": float(thresholds[i]), "per_category": per})
    result = {
        "layer": layer,
        "model": {"name": "fabricated", "weights": "none"},
        "store": {"path": str(store_path), "fingerprint": "", "images": n_images},
        "settings": {"quantile": 0.005, "iou_threshold": 0.04, "union": "original", "upsample": "bilinear",
                     "categories": CATEGORIES, "split": None, "top_k": k, "input_size": None,
                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "labels": label_rows,
        "units": unit_dicts,
        "summary": {},
        "timings": {"tally": 1.0},
        "version": "test",
    }
    (d / "result.json").write_text(json.dumps(result), "utf-8")
    np.save(d / "thresholds.npy", thresholds)
    np.save(d / "iou.npy", iou)
    np.savez(d / "topk.npz", indices=indices, values=values, maps=maps)
    (d / "tally.csv").write_text("unit,category,label,score\n", "utf-8")
    return {"thresholds": thresholds, "indices": indices, "maps": maps, "result": result}


LAYER_A = [  # (label, category, iou, detector)
    ("disc", "object", 0.12, True),
    ("red-c", "color", 0.30, True),
    ("meadow-s", "scene", 0.02, False),
    ("grass", "material", 0.08, True),
    ("disc", "object", 0.05, True),
    ("striped", "texture", 0.01, False),
]
LAYER_B = [
    ("square", "object", 0.20, True),
    ("rim", "part", 0.041, True),
    ("blue-c", "color", 0.07, True),
    ("square", "object", 0.10, True),
]


def fabricate(out: Path, store_path: Path, n_images: int) -> dict:
    """Two layers, 'layer10' and 'layer2' (natural order puts layer2 first)."""
    return {
        "layer2": fabricate_layer(out, "layer2", store_path, n_images, LAYER_A, k=3, hw=(8, 8), seed=1),
        "layer10": fabricate_layer(out, "layer10", store_path, n_images, LAYER_B, k=4, hw=(4, 4), seed=2),
    }
