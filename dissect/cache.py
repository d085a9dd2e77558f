"""A compact on-disk activation cache (a .npy file) with a key sidecar that is always checked.

``<dir>/<name>.npy`` holds [N, U, h, w] (float16 or float32) in the rows of one shard;
``<dir>/<name>.json`` holds {"key": {...}, "shape", "dtype", "complete"}. A cache is reused
only when the recorded key equals the requested one field for field; otherwise it is
rebuilt and the differing fields are logged (never silently reused).
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np

from broden_builder.store.atomic import atomic_write_text

log = logging.getLogger(__name__)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "_"


class NpyRows:
    """Rows of a C-ordered .npy file read and written with pread/pwrite, never memory-mapped.

    Array-like for what the runner needs (``shape``, ``dtype``, ``len``, ``a[i]``, ``a[lo:hi]``,
    ``a[list]``, ``a[lo:hi] = block``). Mapped pages would count in the process's resident
    memory and grow with the file; reads through the page cache keep memory flat. Picklable:
    each process opens its own descriptor.
    """

    def __init__(self, path: Union[str, Path], writable: bool = False):
        self.path = str(path)
        self.writable = writable
        probe = np.load(self.path, mmap_mode="r")  # reads the header only; no data page is touched
        shape, dtype, self.offset = probe.shape, probe.dtype, int(probe.offset)
        fortran = probe.ndim > 1 and not probe.flags.c_contiguous
        del probe
        if fortran or dtype.hasobject:
            raise ValueError(f"{self.path}: only C-ordered numeric .npy files can be read by rows")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        self.row_bytes = self.row_items * self.dtype.itemsize
        self._fd: Optional[int] = None
        self._pid = -1

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR if self.writable else os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, lo: int, hi: int) -> np.ndarray:
        n = max(0, hi - lo)
        data = os.pread(self._handle(), n * self.row_bytes, self.offset + lo * self.row_bytes)
        if len(data) != n * self.row_bytes:
            raise ValueError(f"{self.path}: file is truncated (rows {lo}..{hi - 1} of {self.shape[0]})")
        return np.frombuffer(data, dtype=self.dtype).reshape((n,) + self.shape[1:])

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            k = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= k < self.shape[0]:
                raise IndexError(f"row {key} out of range for {self.shape[0]} rows")
            return self._read(k, k + 1)[0]
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.shape[0])
            block = self._read(lo, hi)
            return block if step == 1 else block[::step]
        rows = [int(k) for k in key]
        return np.stack([self[k] for k in rows]) if rows else np.empty((0,) + self.shape[1:], self.dtype)

    def __setitem__(self, key: slice, value) -> None:
        if not self.writable or not isinstance(key, slice):
            raise TypeError("only slices of a writable NpyRows can be assigned")
        lo, hi, step = key.indices(self.shape[0])
        block = np.ascontiguousarray(value, dtype=self.dtype)
        if step != 1 or block.shape != (hi - lo,) + self.shape[1:]:
            raise ValueError(f"cannot write a block of shape {block.shape} into rows {lo}..{hi - 1} of {self.shape}")
        os.pwrite(self._handle(), block.tobytes(), self.offset + lo * self.row_bytes)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_fd"], d["_pid"] = None, -1
        return d


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
        reuse = meta is not None and meta.get("key") == self.key and tuple(meta.get("shape", ())) == tuple(shape) \
            and meta.get("dtype") == dtype
        if not reuse:
            self._write_meta(shape, dtype, complete=False)
            header = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
            del header  # the file now has its header and full (sparse) length
        self.array = NpyRows(self.path, writable=True)
        return self.array

    def open_read(self) -> NpyRows:
        self.array = NpyRows(self.path)
        return self.array

    def _write_meta(self, shape: tuple, dtype: str, complete: bool) -> None:
        atomic_write_text(self.sidecar, json.dumps({"key": self.key, "shape": list(shape), "dtype": dtype,
                                                    "complete": complete}, indent=1, sort_keys=True))

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
