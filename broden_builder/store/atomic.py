"""Atomic file writes: write to a temporary file in the same folder, then rename.

A temporary file is named ``.<NAME>.<random>.tmp`` beside its target; a process killed
between the write and the rename leaves one behind, which :func:`sweep_temp_files`
removes when the work is resumed (under the store's lock, so no live writer owns it).
Durability: ``durable=True`` fsyncs the file before the rename and its folder after it,
so the new name survives a power cut; commit steps use it (see store/commit.py), the
many per-item files of a build do not (a lost one is redone on resume).
"""

from __future__ import annotations

import io
import os
import re
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


#: Names of the temporary files made by atomic_write_bytes (``.NAME.XXXXXXXX.tmp``).
TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


def fsync_dir(path: Union[str, Path]) -> None:
    """fsync a folder so that renames and creations inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Union[str, Path], data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    ``durable``: fsync the file before renaming it and the folder after (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _write_named(fd, tmp, path, data, durable)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_named(fd: int, tmp: str, path: Path, data: bytes, durable: bool) -> None:
    """The body of :func:`atomic_write_bytes`; an OSError without a file name (os.write on a full
    disk says only "No space left on device") gets ``path``, so the message names it
    (every error message names the file it is about)."""
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), _FILE_MODE)  # mkstemp makes 0600; published files are 0666 & ~umask
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def atomic_write_text(path: Union[str, Path], text: str, newline: str = "\n", durable: bool = False) -> None:
    """Write text (UTF-8); '\\n' in ``text`` is written as ``newline``."""
    if newline != "\n":
        text = text.replace("\n", newline)
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def sweep_temp_files(root: Union[str, Path]) -> int:
    """Remove the temporary files left under ``root`` by writers killed before their rename.

    Call it only while holding the lock of ``root`` (no live writer then owns such a file).
    Returns the number removed.
    """
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if TEMP_FILE.match(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except FileNotFoundError:
                    pass
    return n


def encode_image(array: np.ndarray, fmt: str, **params) -> bytes:
    """Encode a uint8 array with Pillow into bytes (deterministic for fixed params)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **params)
    return buf.getvalue()


def atomic_write_jpeg(path: Union[str, Path], rgb: np.ndarray, quality: int = 75) -> None:
    atomic_write_bytes(path, encode_image(np.ascontiguousarray(rgb, dtype=np.uint8), "JPEG", quality=quality))


def atomic_write_png(path: Union[str, Path], array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_image(np.ascontiguousarray(array, dtype=np.uint8), "PNG", optimize=False))
