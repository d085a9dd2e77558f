"""Atomic file writes: write to a temporary file in the same folder, then rename."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image


def _umask() -> int:
    mask = os.umask(0o022)  # read the umask (os.umask sets and returns the old one), then restore it
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), _FILE_MODE)  # mkstemp makes 0600; published files are 0666 & ~umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Union[str, Path], text: str, newline: str = "\n") -> None:
    """Write text (UTF-8); '\\n' in ``text`` is written as ``newline``."""
    if newline != "\n":
        text = text.replace("\n", newline)
    atomic_write_bytes(path, text.encode("utf-8"))


def encode_image(array: np.ndarray, fmt: str, **params) -> bytes:
    """Encode a uint8 array with Pillow into bytes (deterministic for fixed params)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **params)
    return buf.getvalue()


def atomic_write_jpeg(path: Union[str, Path], rgb: np.ndarray, quality: int = 75) -> None:
    atomic_write_bytes(path, encode_image(np.ascontiguousarray(rgb, dtype=np.uint8), "JPEG", quality=quality))


def atomic_write_png(path: Union[str, Path], array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_image(np.ascontiguousarray(array, dtype=np.uint8), "PNG", optimize=False))
