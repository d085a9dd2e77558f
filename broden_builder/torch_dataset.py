"""A torch Dataset over a Broden store (images and label planes) and its collate function.

Example::

    from torch.utils.data import DataLoader
    from broden_builder import BrodenDataset, collate_broden
    ds = BrodenDataset("broden1_224", categories=["object", "scene"], split="val")
    for batch in DataLoader(ds, batch_size=32, collate_fn=collate_broden, num_workers=4):
        batch["index"]   # LongTensor[B]: 0-based rows of index.csv
        batch["image"]   # FloatTensor[B, 3, H, W], normalised
        batch["seg"]     # SegBatch: the label planes of the batch

Every item is a dict: ``index`` (int, row of index.csv), ``image`` (3 x H x W float tensor:
RGB scaled to [0, 1], then ``(x - mean) / std``; absent when ``with_images=False``), and with
``with_labels=True``: ``pixel`` {category: LongTensor[L, sh, sw]} (L >= 0 layers; global label
numbers, 0 = unlabeled) and ``image_level`` {category: LongTensor[K]} (0s removed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .store.errors import StoreFormatError
from .store.format import load_whole
from .store.reader import BrodenStore

#: torchvision's ImageNet normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegBatch:
    """Labels of B images at the segmentation size sh x sw (what dissect.stats.Tally counts against).

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


def select_rows(store: BrodenStore, split: Optional[str] = None) -> list[int]:
    """0-based index.csv rows of ``split`` (all rows when None); raises ValueError for an unknown split."""
    if split is None:
        return list(range(len(store.rows)))
    rows = [r.index for r in store.rows if r.split == split]
    if not rows:
        known = sorted({r.split for r in store.rows})
        raise ValueError(f"{store.root / 'index.csv'}: no image has split {split!r} (splits present: {known})")
    return rows


def check_categories(store: BrodenStore, categories: Optional[Sequence[str]]) -> list[str]:
    """The requested categories in store order; raises ValueError naming any the store lacks."""
    if categories is None:
        return list(store.categories)
    missing = [c for c in categories if c not in store.categories]
    if missing:
        raise ValueError(
            f"store {store.root} has no categor{'y' if len(missing) == 1 else 'ies'} {missing}; "
            f"its categories are {store.categories}"
        )
    return [c for c in store.categories if c in set(categories)]


class BrodenDataset(Dataset):
    """Images and labels of a Broden store, in index.csv order (optionally one split)."""

    def __init__(
        self,
        store_or_path: Union[BrodenStore, str, Path],
        categories: Optional[Sequence[str]] = None,
        split: Optional[str] = None,
        image_size: Optional[Union[int, tuple]] = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        with_labels: bool = True,
        with_images: bool = True,
        rows: Optional[Sequence[int]] = None,
    ):
        self.store = store_or_path if isinstance(store_or_path, BrodenStore) else BrodenStore(store_or_path)
        self.categories = check_categories(self.store, categories)
        self.rows = list(rows) if rows is not None else select_rows(self.store, split)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = tuple(image_size) if image_size else None  # (H, W)
        if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
            raise ValueError(f"mean and std need 3 values each (std non-zero), got mean={mean} std={std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.with_labels = with_labels
        self.with_images = with_images

    def __len__(self) -> int:
        return len(self.rows)

    def load_image(self, i: int) -> torch.Tensor:
        """Row ``i``'s image as a normalised 3 x H x W float tensor (resized when image_size is set)."""
        path = self.store.image_path(i)
        try:
            with self.store.open_member(self.store.rows[i].image, i) as f, Image.open(f) as im:
                load_whole(im)  # a truncated JPEG is refused whatever Pillow's global setting says
                arr = rgb_array(im, self.image_size)
        except (OSError, ValueError) as e:
            raise StoreFormatError(path, f"cannot read image of index.csv row {i + 1} ({e})") from None
        return normalise(arr, self.mean, self.std)

    def load_labels(self, i: int) -> tuple[dict, dict]:
        """(pixel {cat: LongTensor[L, sh, sw]}, image_level {cat: LongTensor[K]}) for row ``i``."""
        row = self.store.rows[i]
        pixel, image_level = {}, {}
        for cat in self.categories:
            if cat in self.store.image_level_categories:
                image_level[cat] = torch.tensor(self.store.image_labels(i, cat), dtype=torch.long)
            else:
                layers = self.store.pixel_layers(i, cat)
                for layer in layers:
                    if layer.shape != (row.sh, row.sw):
                        raise StoreFormatError(
                            self.store.root / "index.csv",
                            f"{cat} plane of {row.image} is {layer.shape[0]}x{layer.shape[1]}, "
                            f"index.csv says sh x sw = {row.sh}x{row.sw}", i + 1)
                if layers:
                    pixel[cat] = torch.from_numpy(np.stack(layers).astype(np.int64))
                else:
                    pixel[cat] = torch.zeros((0, row.sh, row.sw), dtype=torch.long)
        return pixel, image_level

    def __getitem__(self, k: int) -> dict:
        i = self.rows[k]
        item = {"index": i}
        if self.with_images:
            item["image"] = self.load_image(i)
        if self.with_labels:
            item["pixel"], item["image_level"] = self.load_labels(i)
        return item


def rgb_array(im: Image.Image, image_size: Optional[tuple] = None) -> np.ndarray:
    """``im`` as RGB uint8 [H, W, 3], resized (bilinear, the whole image, no crop) to ``image_size``
    (H, W) when given and different: the network input's pixels before normalisation. Raises
    OSError/ValueError for an image Pillow cannot decode."""
    im = im.convert("RGB")
    if image_size and (im.height, im.width) != tuple(image_size):
        im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def normalise(arr: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float32 [3, H, W]: ``(arr / 255 - mean) / std`` (mean, std float32 [3, 1, 1])."""
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    return (x - mean) / std


def pad_labels(items: Sequence[dict]) -> SegBatch:
    """Stack per-item label tensors into a SegBatch (layers and lists padded with 0): the one label padder."""
    pixel, image_level = {}, {}
    if items:
        for cat in items[0]["pixel"]:
            planes = [it["pixel"][cat] for it in items]
            shapes = {tuple(p.shape[1:]) for p in planes}
            if len(shapes) != 1:
                raise ValueError(f"{cat} planes in one batch have different sizes {sorted(shapes)}")
            sh, sw = shapes.pop()
            lmax = max(max(p.shape[0] for p in planes), 1)
            out = torch.zeros((len(items), lmax, sh, sw), dtype=torch.long)
            for b, p in enumerate(planes):
                out[b, : p.shape[0]] = p
            pixel[cat] = out
        for cat in items[0]["image_level"]:
            lists = [it["image_level"][cat] for it in items]
            kmax = max(max(int(v.numel()) for v in lists), 1)
            out = torch.zeros((len(items), kmax), dtype=torch.long)
            for b, v in enumerate(lists):
                out[b, : v.numel()] = v
            image_level[cat] = out
    return SegBatch(pixel=pixel, image_level=image_level)


def collate_broden(batch: Sequence[dict]) -> dict:
    """Collate BrodenDataset items into a dict: ``index`` LongTensor[B]; ``image`` float [B,3,H,W]
    (when the items carry images); ``seg`` the label planes as one :class:`SegBatch` (when they
    carry labels; the same as :func:`load_segbatch` of those rows); any other item key stacked by
    ``torch.utils.data.default_collate``."""
    out = {"index": torch.tensor([it["index"] for it in batch], dtype=torch.long)}
    if batch and "image" in batch[0]:
        out["image"] = torch.stack([it["image"] for it in batch])
    if batch and "pixel" in batch[0]:
        out["seg"] = pad_labels(batch)
    for key in batch[0] if batch else ():
        if key not in ("index", "image", "pixel", "image_level"):
            out[key] = torch.utils.data.default_collate([it[key] for it in batch])
    return out


def load_segbatch(store: Union[BrodenStore, str, Path], rows: Sequence[int],
                  categories: Optional[Sequence[str]] = None) -> SegBatch:
    """The labels of index.csv rows ``rows`` (0-based) as one SegBatch, read as BrodenDataset reads them.

    Raises ValueError naming an unknown category, StoreFormatError for a bad label file.
    """
    ds = BrodenDataset(store, categories=categories, rows=list(rows), with_images=False)
    return pad_labels([ds[k] for k in range(len(ds))])
