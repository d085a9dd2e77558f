"""Resizing rules of the Broden build: images squashed bilinear, label planes nearest neighbour."""
from __future__ import annotations

import numpy as np
from PIL import Image


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash an H x W x 3 uint8 image to size x size (no crop), bilinear."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an H x W label plane to size x size (samples pixel centres)."""
    h, w = labels.shape
    if h == size and w == size:
        return np.asarray(labels)
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.intp), w - 1)
    return np.asarray(labels)[rows[:, None], cols[None, :]]
