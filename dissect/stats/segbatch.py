"""SegBatch: the segmentation labels of a batch of images, as tensors (see dissect_interface)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch


@dataclass
class SegBatch:
    """Labels of B images at the segmentation size sh x sw.

    ``pixel[cat]`` is a LongTensor [B, Lmax, sh, sw] of global label numbers (layers padded
    with zeros; 0 = unlabeled). ``image_level[cat]`` is a LongTensor [B, Kmax] of global label
    numbers (padded with 0). Both hold every category the batch was loaded with.
    """

    pixel: dict = field(default_factory=dict)
    image_level: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        for t in list(self.pixel.values()) + list(self.image_level.values()):
            return int(t.shape[0])
        return 0

    @property
    def size(self) -> Optional[tuple]:
        """(sh, sw), or None when the batch has no pixel category."""
        for t in self.pixel.values():
            return (int(t.shape[2]), int(t.shape[3]))
        return None

    def categories(self) -> list:
        return list(self.pixel) + list(self.image_level)

    def to(self, device) -> "SegBatch":
        return SegBatch(
            pixel={c: t.to(device) for c, t in self.pixel.items()},
            image_level={c: t.to(device) for c, t in self.image_level.items()},
        )


def pad_layers(layers: Sequence[Sequence[np.ndarray]], size: tuple) -> torch.Tensor:
    """Stack per-image lists of sh x sw layers into a LongTensor [B, Lmax, sh, sw], zero padded."""
    lmax = max((len(l) for l in layers), default=0)
    out = torch.zeros((len(layers), lmax) + tuple(size), dtype=torch.long)
    for b, ls in enumerate(layers):
        for j, layer in enumerate(ls):
            if tuple(layer.shape) != tuple(size):
                raise ValueError(f"image {b} layer {j}: shape {tuple(layer.shape)} != segmentation size {tuple(size)}")
            out[b, j] = torch.from_numpy(np.asarray(layer, dtype=np.int64))
    return out


def pad_codes(codes: Sequence[Sequence[int]]) -> torch.Tensor:
    """Stack per-image lists of label numbers into a LongTensor [B, Kmax], zero padded."""
    kmax = max((len(c) for c in codes), default=0)
    out = torch.zeros((len(codes), kmax), dtype=torch.long)
    for b, cs in enumerate(codes):
        if cs:
            out[b, : len(cs)] = torch.tensor(list(cs), dtype=torch.long)
    return out


def segbatch_from_store(store, rows: Sequence[int], categories: Optional[Sequence[str]] = None) -> SegBatch:
    """Load the labels of index rows ``rows`` of a BrodenStore into a SegBatch.

    All rows must share one segmentation size (sh, sw from index.csv).
    """
    cats = list(categories) if categories is not None else list(store.categories)
    rows = list(rows)
    sizes = {(store.rows[i].sh, store.rows[i].sw) for i in rows}
    if len(sizes) > 1:
        raise ValueError(f"{store.root / 'index.csv'}: rows {rows[:5]}... have different segmentation sizes {sorted(sizes)}")
    size = sizes.pop() if sizes else (0, 0)
    seg = SegBatch()
    for cat in cats:
        if cat not in store.categories:
            raise ValueError(f"{store.root / 'index.csv'}: the store has no category {cat!r} (it has {store.categories})")
        if cat in store.image_level_categories:
            seg.image_level[cat] = pad_codes([store.image_labels(i, cat) for i in rows])
        else:
            seg.pixel[cat] = pad_layers([store.pixel_layers(i, cat) for i in rows], size)
    return seg
