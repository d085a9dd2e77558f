"""Per-image label statistics (images and pixel fraction per label) and their sums."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np


def layer_fractions(layers: Sequence[np.ndarray]) -> dict[int, float]:
    """Fraction of pixels carrying each non-zero label, over the union of the layers (a pixel counts once per label)."""
    if not layers:
        return {}
    if len(layers) == 1:
        flat = np.asarray(layers[0]).ravel()
        counts = np.bincount(flat)
        total = flat.size
    else:
        stack = np.stack([np.asarray(l).ravel() for l in layers]).astype(np.int64)  # L x P
        total = stack.shape[1]
        top = int(stack.max()) + 1
        pairs = np.unique(np.arange(total, dtype=np.int64)[None, :] * top + stack)
        counts = np.bincount(pairs % top)
    nz = np.nonzero(counts)[0]
    return {int(k): float(counts[k]) / total for k in nz if k != 0}


class LabelTally:
    """Sums per (category, label): number of images and coverage (sum of per-image pixel fractions)."""

    def __init__(self) -> None:
        self.images: dict = defaultdict(int)
        self.coverage: dict = defaultdict(float)

    def add_pixel(self, category: str, fractions: Mapping[int, float]) -> None:
        for label, frac in fractions.items():
            self.images[(category, label)] += 1
            self.coverage[(category, label)] += frac

    def add_image_level(self, category: str, labels: Iterable[int]) -> None:
        for label in set(labels):
            if label:
                self.images[(category, label)] += 1
                self.coverage[(category, label)] += 1.0

    def add_record(self, record) -> None:
        """Add one written row (a writer RowRecord: its pixel fractions and image-level numbers)."""
        for category, fractions in record.pixel_fractions.items():
            self.add_pixel(category, fractions)
        for category, labels in record.image_level.items():
            self.add_image_level(category, labels)

    def merge(self, other: "LabelTally") -> None:
        for k, v in other.images.items():
            self.images[k] += v
        for k, v in other.coverage.items():
            self.coverage[k] += v
