"""Dummy images shared by the offline source tests (coco, folder, hf)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 48, 64


def _save_rgb(path: Path, h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
