"""A compact on-disk activation cache (a .npy file) with a key sidecar that is always checked.

``<dir>/<name>.npy`` holds [N, U, h, w] (float16 or float32) in the rows of one shard;
``<dir>/<name>.json`` holds {"key": {...}, "shape", "dtype", "complete"}. A cache is reused
only when the recorded key equals the requested one field for field; otherwise it is
rebuilt and the differing fields are logged (never silently reused).
"""

from __future__ import annotations

import errno

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from broden_builder.shared import atomic_write_text

from ..results import safe_name
from ._activations import NpyRows

log = logging.getLogger(__name__)


class ActivationCache:
    """One layer's activations for one shard of images."""

    def __init__(self, directory: Path, name: str, key: dict):
        self.dir = Path(directory)
        self.name = safe_name(name)
        self.key = json.loads(json.dumps(key, sort_keys=True))  # normalise (tuples -> lists)
        self.path = self.dir / f"{self.name}.npy"
        self.sidecar = self.dir / f"{self.name}.json"
        self.array: Optional[NpyRows] = None

    def _meta(self) -> Optional[dict]:
        if not self.sidecar.is_file() or not self.path.is_file():
            return None
        try:
            return json.loads(self.sidecar.read_text("utf-8"))
        except ValueError:
            return None

    def matches(self, require_complete: bool) -> bool:
        """True when the files on disk were made for exactly this key (and are complete, if asked)."""
        meta = self._meta()
        if meta is None:
            return False
        if meta.get("key") != self.key:
            old = meta.get("key") or {}
            diff = sorted(k for k in set(old) | set(self.key) if old.get(k) != self.key.get(k))
            log.warning("activation cache %s was made with different %s; not reusing it", self.path, ", ".join(diff))
            return False
        return bool(meta.get("complete")) or not require_complete

    def create(self, shape: tuple, dtype: str) -> NpyRows:
        """A new (or, when the key matches, the existing) writable row file of ``shape``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self._meta()
        reuse = (
            meta is not None
            and meta.get("key") == self.key
            and tuple(meta.get("shape", ())) == tuple(shape)
            and meta.get("dtype") == dtype
        )
        if not reuse:
            self._write_meta(shape, dtype, complete=False)
            header = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
            del header  # the file now has its header and full (sparse) length
            _reserve(self.path)
        self.array = NpyRows(self.path, writable=True)
        return self.array

    def open_read(self) -> NpyRows:
        self.array = NpyRows(self.path)
        return self.array

    def _write_meta(self, shape: tuple, dtype: str, complete: bool) -> None:
        atomic_write_text(
            self.sidecar,
            json.dumps(
                {"key": self.key, "shape": list(shape), "dtype": dtype, "complete": complete}, indent=1, sort_keys=True
            ),
        )

    def flush(self) -> None:
        """Rows are written with pwrite: nothing is buffered in the process."""

    def mark_complete(self) -> None:
        self.flush()
        self._write_meta(tuple(self.array.shape), str(self.array.dtype), complete=True)

    def remove(self) -> None:
        if self.array is not None:
            self.array.close()
        self.array = None
        for p in (self.path, self.sidecar):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def _reserve(path) -> None:
    """Allocate the blocks of the sparse row file now (``posix_fallocate``), so that a full disk is an
    OSError naming the file here, not a SIGBUS when a memory-mapped row is written later."""
    import os

    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            return  # the file system cannot reserve: the rows are written as before
        raise OSError(e.errno, f"{e.strerror} (reserving the activation cache; see --cache-dir)", str(path)) from None
    finally:
        os.close(fd)
