"""Per-image label statistics (images and pixel fraction per label) and their sums."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np


def layer_fractions(layers: Sequence[np.ndarray]) -> dict[int, float]:
    """Per non-zero label: its pixels summed over every layer, divided by the pixels of one layer.

    ``layers``: one or more H x W integer planes of one category (a stack: ADE20K part levels).
    The original build's rule (docs/format.md, "ADE20K part levels"; NetDissect ``joinseg.py``,
    ``count_label_statistics``): one histogram of all levels over one plane's size, so a label
    on two levels at one pixel counts it twice and a fraction can exceed 1.
    """
    if not layers:
        return {}
    flat = np.concatenate([np.asarray(l).ravel() for l in layers])
    counts = np.bincount(flat)
    total = np.asarray(layers[0]).size
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
