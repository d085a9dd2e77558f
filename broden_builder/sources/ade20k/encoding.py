"""ADE20K segmentation PNGs: ``class = (R // 10) * 256 + G`` (B holds instance ids).

The same encoding is used by ``X_seg.png`` (objects) and ``X_parts_N.png`` (part level N)
in the 2016-07-26 and 2021-17-01 releases. Loading helpers raise :class:`BadSourceItem`
naming the file and what is wrong.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ...store.format import load_whole
from ..base import BadSourceItem

_PARTS_RE = re.compile(r"_parts_(\d+)\.png$")


def decode_class(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> int32 class map, (R // 10) * 256 + G (0 = unlabeled)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB array, got shape {rgb.shape}")
    return (rgb[..., 0].astype(np.int32) // 10) * 256 + rgb[..., 1].astype(np.int32)


def encode_class(classes: np.ndarray, instances: Optional[np.ndarray] = None) -> np.ndarray:
    """Inverse of :func:`decode_class` (R = (class // 256) * 10, G = class % 256, B = instances)."""
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= 26 * 256):
        raise ValueError(f"ADE classes must lie in 0..{26 * 256 - 1}, got {classes.min()}..{classes.max()}")
    out = np.zeros(classes.shape + (3,), np.uint8)
    out[..., 0] = (classes // 256) * 10
    out[..., 1] = classes % 256
    if instances is not None:
        out[..., 2] = instances
    return out


def load_rgb(path: Path) -> np.ndarray:
    """Read a colour-coded segmentation PNG as H x W x 3 uint8, values untouched; BadSourceItem naming
    the file when unreadable. (Photos go through the one image decoder, sources/decode.py.)"""
    try:
        with Image.open(path) as im:
            load_whole(im)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise BadSourceItem(f"{path}: file not found") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise BadSourceItem(f"{path}: unreadable image ({e})") from None


def load_class_map(path: Path, shape: tuple, max_class: Optional[int] = None) -> np.ndarray:
    """Decode an ADE seg/parts PNG; checks its size against ``shape`` and classes against ``max_class``."""
    rgb = load_rgb(path)
    if rgb.shape[:2] != tuple(shape):
        raise BadSourceItem(f"{path}: segmentation is {rgb.shape[1]}x{rgb.shape[0]}, "
                            f"its image is {shape[1]}x{shape[0]}")
    cls = decode_class(rgb)
    if max_class is not None and cls.size and int(cls.max()) > max_class:
        raise BadSourceItem(f"{path}: object index {int(cls.max())} is beyond the {max_class} object names of the index")
    return cls


def part_files(stem: Path) -> list:
    """``X_parts_1.png, X_parts_2.png, ...`` up to the first missing level.

    Raises BadSourceItem when a higher level exists after a missing one (a missing part level).
    """
    found = []
    n = 1
    while True:
        p = stem.parent / f"{stem.name}_parts_{n}.png"
        if not p.exists():
            break
        found.append(p)
        n += 1
    try:
        levels = sorted(int(m.group(1)) for f in stem.parent.glob(f"{glob_escape(stem.name)}_parts_*.png")
                        if (m := _PARTS_RE.search(f.name)))
    except OSError:
        levels = []
    beyond = [k for k in levels if k > len(found)]
    if beyond:
        raise BadSourceItem(f"{stem}_parts_{len(found) + 1}.png: part level {len(found) + 1} is missing "
                            f"but level {beyond[0]} exists")
    return found


def glob_escape(name: str) -> str:
    """Escape glob metacharacters in a file name."""
    return re.sub(r"([*?\[])", r"[\1]", name)
