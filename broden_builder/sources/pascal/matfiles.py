"""Readers for the two Pascal annotation .mat formats (MATLAB v5 files, read with scipy).

- Pascal-Context ``trainval/<id>.mat``: variable ``LabelMap``, an H x W uint16 array of
  class ids 1..459 (names in ``labels.txt``).
- Pascal-Part ``Annotations_Part/<id>.mat``: a 1 x 1 struct ``anno`` with ``imname`` and a
  1 x N struct array ``objects``; each object has ``class`` (string), ``class_ind`` (1..20),
  ``mask`` (H x W uint8 0/1) and ``parts``, a 1 x M struct array with ``part_name`` and
  ``mask`` (empty for classes annotated by silhouette only).

The files are loaded without ``squeeze_me`` (so a single object or part stays a 1 x 1
array rather than collapsing to a scalar) and every struct array is walked with ``ravel()``.
All errors raise BadSourceItem naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ..base import BadSourceItem


def load_mat(path: Path) -> dict:
    """scipy.io.loadmat with every failure turned into BadSourceItem naming the file."""
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except FileNotFoundError:
        raise BadSourceItem(f"{path}: annotation file is missing") from None
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files
        raise BadSourceItem(f"{path}: unreadable .mat file (MATLAB v7.3/HDF5 is not supported: {e})") from None
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError... on corrupt files
        raise BadSourceItem(f"{path}: unreadable .mat file ({type(e).__name__}: {e})") from None


def mat_string(value, where: str) -> str:
    """A MATLAB char array (as loaded by scipy) as a Python str."""
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return "".join(str(x) for x in arr.ravel()).strip()
    if arr.dtype == object and arr.size == 1:
        return mat_string(arr.ravel()[0], where)
    raise BadSourceItem(f"{where}: expected a string, got {arr.dtype} array of shape {arr.shape}")


def read_label_map(path: Path, max_id: int) -> np.ndarray:
    """Pascal-Context LabelMap as H x W int32; ids outside 0..max_id raise BadSourceItem."""
    d = load_mat(path)
    if "LabelMap" not in d:
        names = sorted(k for k in d if not k.startswith("__"))
        raise BadSourceItem(f"{path}: no variable 'LabelMap' (variables: {names})")
    lm = np.asarray(d["LabelMap"])
    if lm.ndim != 2 or lm.dtype.kind not in "iub":
        raise BadSourceItem(f"{path}: LabelMap is a {lm.dtype} array of shape {lm.shape}, expected H x W integers")
    if lm.size:
        lo, hi = int(lm.min()), int(lm.max())
        if lo < 0 or hi > max_id:
            bad = lo if lo < 0 else hi
            raise BadSourceItem(f"{path}: LabelMap holds label id {bad}, outside the range 1..{max_id} of labels.txt")
    return lm.astype(np.int32)


@dataclass(frozen=True)
class PartObject:
    """One annotated object of a Pascal-Part file: its class, and (raw part name, mask) pairs."""

    class_name: str
    class_ind: int
    parts: Tuple[Tuple[str, np.ndarray], ...]


def _field(rec, name: str, where: str):
    names = rec.dtype.names or ()
    if name not in names:
        raise BadSourceItem(f"{where}: struct has no field {name!r} (fields: {list(names)})")
    return rec[name]


def _struct_items(value, where: str) -> list:
    """Elements of a MATLAB struct array (any shape, possibly empty) as numpy records."""
    arr = np.asarray(value)
    if arr.size == 0:
        return []
    if arr.dtype == object and arr.size == 1 and arr.dtype.names is None:
        return _struct_items(arr.ravel()[0], where)
    if arr.dtype.names is None:
        raise BadSourceItem(f"{where}: expected a struct array, got {arr.dtype} of shape {arr.shape}")
    return list(arr.ravel())


def read_part_objects(path: Path) -> List[PartObject]:
    """The objects of a Pascal-Part annotation with their part masks (object masks are not used)."""
    d = load_mat(path)
    if "anno" not in d:
        raise BadSourceItem(f"{path}: no struct 'anno' (variables: {sorted(k for k in d if not k.startswith('__'))})")
    annos = _struct_items(d["anno"], str(path))
    if len(annos) != 1:
        raise BadSourceItem(f"{path}: 'anno' should be a 1 x 1 struct, it has {len(annos)} elements")
    out = []
    for i, obj in enumerate(_struct_items(_field(annos[0], "objects", str(path)), f"{path}: anno.objects")):
        where = f"{path}: anno.objects({i + 1})"
        cls = mat_string(_field(obj, "class", where), where)
        ind_arr = np.asarray(obj["class_ind"]) if "class_ind" in (obj.dtype.names or ()) else np.zeros(0)
        ind = int(ind_arr.ravel()[0]) if ind_arr.size else 0
        parts = []
        for j, part in enumerate(_struct_items(_field(obj, "parts", where), f"{where}.parts")):
            pwhere = f"{where}.parts({j + 1})"
            name = mat_string(_field(part, "part_name", pwhere), pwhere)
            mask = np.asarray(_field(part, "mask", pwhere))
            if mask.ndim != 2:
                raise BadSourceItem(f"{pwhere}: mask of part {name!r} has shape {mask.shape}, expected H x W")
            parts.append((name, mask))
        out.append(PartObject(cls, ind, tuple(parts)))
    return out
