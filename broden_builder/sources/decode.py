"""The one image decoder of every source: a file, a PIL image or an array -> H x W x 3 uint8 RGB.

Field rules (why this is our own code and not just ``PIL.Image.convert('RGB')``, which
clips 16-bit pixels at 255 and turns float images black):

- 8-bit RGB is kept; greyscale (``L``, ``1``), palette (``P``, ``PA``), ``LA``, ``RGBA``,
  ``RGBa``, ``CMYK`` and ``YCbCr`` are converted by PIL (alpha dropped, as the original's
  ``imread(mode='RGB')`` did);
- 16-bit images (PNG/TIFF modes ``I;16``, ``I;16B``, ``I;16L``, and PNG's ``I``) are scaled
  by their bit depth: v -> round(v * 255 / 65535);
- float images (mode ``F``, float arrays) must hold values in [0, 1] and are scaled by 255;
- arrays: H x W, H x W x 1, H x W x 3 or H x W x 4 of uint8, uint16 (scaled as 16-bit),
  bool, float in [0, 1], or other integers within 0..255;
- EXIF orientation is applied only when the caller asks (``exif=True``): the sources whose
  annotations are drawn on the upright image; built-in datasets annotate the stored pixels.

Anything else raises :class:`BadSourceItem` naming the file (or record) and what it holds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

from ..store.format import load_whole
from ..store.paths import special_file
from .base import BadSourceItem

#: PIL modes converted by PIL itself (8 bits per channel).
_CONVERTED = frozenset({"RGB", "L", "1", "P", "PA", "LA", "La", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def _scale16(arr: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded to nearest."""
    a = np.asarray(arr).astype(np.uint32)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(arr: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
        lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if np.isfinite(a).any() else (float("nan"),) * 2
        raise BadSourceItem(f"{where}: float image values must lie in [0, 1] (found {lo:g}..{hi:g}"
                            f"{', NaN or inf' if not np.isfinite(a).all() else ''}); scale it first")
    return np.floor(a * 255.0 + 0.5).astype(np.uint8)


def _grey_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))


def _from_pil(im: Any, where: str, exif: bool) -> np.ndarray:
    if exif:
        from PIL import ImageOps

        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in _CONVERTED:
        return np.asarray(im.convert("RGB"))
    if mode in _SIXTEEN or (mode == "I" and getattr(im, "format", None) in ("PNG", "TIFF")):
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise BadSourceItem(f"{where}: {mode} image holds values outside 0..65535")
        return _grey_to_rgb(_scale16(a))
    if mode == "F":
        return _grey_to_rgb(_scale_float(np.asarray(im), where))
    raise BadSourceItem(f"{where}: unsupported image mode {mode!r} (expected 8- or 16-bit greyscale, palette, "
                        f"RGB(A), CMYK or float in [0, 1])")


def _from_array(arr: Any, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise BadSourceItem(f"{where}: image array has shape {a.shape}, expected H x W, H x W x 3 or H x W x 4")
    if a.ndim == 3:
        a = a[..., :3]
    if a.dtype == np.uint8:
        out = a
    elif a.dtype == np.bool_:
        out = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        out = _scale16(a)
    elif np.issubdtype(a.dtype, np.floating):
        out = _scale_float(a, where)
    elif np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise BadSourceItem(f"{where}: {a.dtype} image values {a.min()}..{a.max()} are not 8-bit; give uint16 "
                                f"for 16-bit images or floats in [0, 1]")
        out = a.astype(np.uint8)
    else:
        raise BadSourceItem(f"{where}: image array of dtype {a.dtype} is not an image")
    return np.ascontiguousarray(_grey_to_rgb(out) if out.ndim == 2 else out)


def decode_image(image: Any, where: str, exif: bool = False) -> np.ndarray:
    """A PIL image or an array as H x W x 3 uint8 RGB (the rules above); BadSourceItem naming ``where``."""
    if hasattr(image, "mode") and hasattr(image, "convert"):
        if hasattr(image, "load"):
            try:
                load_whole(image)  # a lazily opened file (a dataset's image): refused when truncated
            except OSError as e:
                raise BadSourceItem(f"{where}: cannot read image ({e})") from None
        return _from_pil(image, where, exif)
    return _from_array(image, where)


def load_image(path: Union[str, Path], exif: bool = False) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB; BadSourceItem naming the file when unreadable or unsupported."""
    from PIL import Image

    kind = special_file(path)
    if kind is not None:  # a FIFO would block Image.open forever
        raise BadSourceItem(f"{path}: is {kind}, not an image file")
    try:
        with Image.open(path) as im:
            load_whole(im)  # a truncated file is refused whatever Pillow's global setting says
            return decode_image(im, str(path), exif)
    except FileNotFoundError:
        raise BadSourceItem(f"{path}: file not found") from None
    except BadSourceItem:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise BadSourceItem(f"{path}: cannot read image ({e})") from None
