"""The ADE20K 2016-07-26 index (``index_ade20k.mat``): per-image file, folder and scene, and the object names.

The MATLAB struct ``index`` holds ``filename`` / ``folder`` / ``scene`` (1 x N cells), ``objectnames``
(1 x K cells, comma-separated synonym lists; class k of a segmentation PNG is ``objectnames[k - 1]``),
and ``objectPresence`` / ``objectIsPart`` (K x N instance counts: all instances, and those that
are parts of another object).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

#: Object names that mean "no name" (class 1 of the 2016 index is '-').
VOID_NAMES = frozenset({"", "-"})


def _cells(arr) -> list:
    out = []
    for c in np.asarray(arr).ravel():
        c = np.asarray(c).ravel()
        out.append(str(c[0]) if c.size else "")
    return out


@dataclass(frozen=True)
class Index2016:
    """Per-image metadata of the index (row order kept) and the object names."""

    filenames: tuple
    folders: tuple
    scenes: tuple
    objectnames: tuple

    def __len__(self) -> int:
        return len(self.filenames)


def _load_struct(path: Path):
    st = Path(path).stat()
    return _load_struct_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=2)
def _load_struct_cached(path: str, mtime_ns: int, size: int):
    """The parsed struct, cached per (file, mtime, size): parsing takes seconds."""
    import scipy.io

    try:
        m = scipy.io.loadmat(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a readable MATLAB index ({e})") from None
    if "index" not in m:
        raise ValueError(f"{path}: no variable 'index' (found {sorted(k for k in m if not k.startswith('__'))})")
    ix = m["index"]
    if ix.dtype.names is None:
        raise ValueError(f"{path}: 'index' is not a struct")
    return ix[0, 0]


def load_index(path: Path) -> Index2016:
    """Read filenames, folders, scenes and objectnames; raises ValueError naming the file and field."""
    ix = _load_struct(path)
    missing = [f for f in ("filename", "folder", "scene", "objectnames") if f not in ix.dtype.names]
    if missing:
        raise ValueError(f"{path}: index lacks field(s) {missing}")
    files, folders, scenes = _cells(ix["filename"]), _cells(ix["folder"]), _cells(ix["scene"])
    if not (len(files) == len(folders) == len(scenes)):
        raise ValueError(f"{path}: filename/folder/scene lengths differ ({len(files)}/{len(folders)}/{len(scenes)})")
    return Index2016(tuple(files), tuple(folders), tuple(scenes), tuple(_cells(ix["objectnames"])))


def presence_counts(path: Path) -> Optional[tuple]:
    """(objects, parts): K-vectors of image counts from ``objectPresence`` / ``objectIsPart``.

    An object class counts for an image when it has an instance that is not a part
    (presence - is_part > 0); a part class when it has an instance that is a part.
    None when the index has no presence matrix.
    """
    ix = _load_struct(path)
    if "objectPresence" not in ix.dtype.names:
        return None
    pres = np.asarray(ix["objectPresence"], dtype=np.float32)
    if "objectIsPart" in ix.dtype.names:
        part = np.asarray(ix["objectIsPart"], dtype=np.float32)
        whole = ((pres - part) > 0).sum(axis=1)
        parts = (part > 0).sum(axis=1)
    else:
        whole = (pres > 0).sum(axis=1)
        parts = None
    return whole.astype(np.int64), (parts.astype(np.int64) if parts is not None else None)
