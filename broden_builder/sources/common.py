"""Helpers shared by the user-data sources (coco, hf, folder): images, masks, names.

Contract: errors about one unusable image raise BadSourceItem (the build skips it);
errors in the user's annotations or configuration raise SourceDataError naming the
file and the record (the build stops, nothing is committed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..store.format import load_whole
from ..store.paths import special_file
from .base import BadSourceItem, SourceDataError
from .decode import decode_image, load_image


def load_rgb(path: Path, exif: bool = False) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB by the one image decoder (decode.py: bit depths, modes,
    EXIF when asked); BadSourceItem naming the file when unreadable or unsupported."""
    return load_image(path, exif)


def to_rgb(image: Any, where: str, exif: bool = False) -> np.ndarray:
    """A PIL image or array as H x W x 3 uint8 by the one image decoder (decode.py)."""
    return decode_image(image, where, exif)


def load_label_rgb(path: Path) -> np.ndarray:
    """A colour-coded label PNG (COCO panoptic) as H x W x 3 uint8, values untouched; BadSourceItem naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            load_whole(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise BadSourceItem(f"{path}: cannot read label image ({e})") from None


def mask_values(image: Any, where: str) -> np.ndarray:
    """Mask pixel values as an H x W int64 array.

    Greyscale, palette (the index), 16- and 32-bit masks give their value; RGB(A) masks
    give R + 256 * G + 65536 * B (so '#rrggbb' colour keys can name them).
    """
    if hasattr(image, "mode"):
        mode = image.mode
        if mode in ("RGB", "RGBA"):
            arr = np.asarray(image.convert("RGB")).astype(np.int64)
            return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]
        if mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
            return np.asarray(image).astype(np.int64)
        raise BadSourceItem(f"{where}: unsupported mask mode {mode!r} (use greyscale, palette, 16-bit or RGB PNGs)")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3].astype(np.int64)
        return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise BadSourceItem(f"{where}: mask has shape {arr.shape} and dtype {arr.dtype}, expected an H x W integer array")
    return arr.astype(np.int64)


def read_mask_file(path: Path) -> np.ndarray:
    from PIL import Image

    kind = special_file(path)
    if kind is not None:  # a FIFO would block Image.open forever
        raise BadSourceItem(f"{path}: is {kind}, not a mask file")
    try:
        with Image.open(path) as im:
            load_whole(im)
            return mask_values(im, str(path))
    except (OSError, ValueError) as e:
        raise BadSourceItem(f"{path}: cannot read mask ({e})") from None


def parse_value(text: Any, where: str) -> int:
    """A mask value from a names table: an integer, or a colour '#rrggbb' (R + 256 G + 65536 B)."""
    s = str(text).strip()
    try:
        if s.startswith("#") and len(s) == 7:
            r, g, b = int(s[1:3], 16), int(s[3:5], 16), int(s[5:7], 16)
            return r + 256 * g + 65536 * b
        v = int(s)
    except ValueError:
        raise SourceDataError(f"{where}: mask value {s!r} is neither an integer nor a colour '#rrggbb'") from None
    if v < 0:
        raise SourceDataError(f"{where}: mask value {v} is negative")
    return v


def split_names(cell: Any) -> tuple:
    """'car;automobile' or ['car', 'automobile'] -> ('car', 'automobile'); empty entries dropped."""
    if isinstance(cell, (list, tuple)):
        items = [str(x) for x in cell]
    else:
        items = str(cell).split(";")
    return tuple(x.strip() for x in items if str(x).strip())


def apply_rename(names: Sequence[str], rename: Optional[Mapping[str, str]]) -> tuple:
    """Apply a source entry's ``rename: {old: new}`` to the first name (the old name stays a synonym
    unless the new one is given with ``!`` in front, which drops the old name)."""
    names = tuple(names)
    if not rename or not names:
        return names
    new = rename.get(names[0])
    if new is None:
        return names
    new = str(new)
    if new.startswith("!"):
        return (new[1:],) + names[1:]
    return (new,) + names


class ValueTable:
    """Mask value -> source code (1..N) with names; ``unlabeled`` values map to 0."""

    def __init__(self, names: Mapping[int, Sequence[str]], unlabeled: Iterable[int], origin: str):
        self.origin = origin
        self.unlabeled = frozenset(int(v) for v in unlabeled)
        self.values = sorted(v for v in names if v not in self.unlabeled)
        self.code = {v: i + 1 for i, v in enumerate(self.values)}
        self.names = {self.code[v]: tuple(names[v]) for v in self.values}

    def vocabulary(self) -> dict:
        return dict(self.names)

    def codes(self, mask: np.ndarray, where: str) -> np.ndarray:
        """Source codes of a mask; a value that is neither named nor unlabeled raises SourceDataError."""
        vals, inv = np.unique(mask, return_inverse=True)
        table = np.zeros(len(vals), dtype=np.int32)
        for i, v in enumerate(vals.tolist()):
            if v in self.unlabeled:
                continue
            c = self.code.get(v)
            if c is None:
                raise SourceDataError(
                    f"{where}: mask value {v} has no name in {self.origin} "
                    f"(name it there, or list it under 'unlabeled' in the source entry)")
            table[i] = c
        return table[inv.reshape(mask.shape)]


def int_list(value: Any, key: str, origin: str) -> list:
    if value is None:
        return []
    if isinstance(value, (int, str)):
        value = [value]
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise SourceDataError(f"{origin}: '{key}' must be a list of integers, got {value!r}") from None


def store_basename(name: str, where: str) -> str:
    """A safe relative store name (no '..', no absolute path, '/' separators, no extension)."""
    p = Path(str(name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise SourceDataError(f"{where}: image name {name!r} must be a relative path without '..'")
    return p.with_suffix("").as_posix()
