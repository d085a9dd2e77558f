"""The ADE20K 2021-17-01 release: per-image JSON annotations and the optional pickled index.

Layout: ``ADE20K_2021_17_01/images/ADE/{training,validation}/<scene path>/X.jpg`` with
``X_seg.png``, ``X_parts_N.png`` and ``X.json``. In the JSON (``annotation``), each object
has ``name`` (comma-separated synonyms), ``name_ndx`` and ``parts.part_level`` (0 = whole
object, N = part level N). The class a seg/parts PNG holds at a pixel equals the
``name_ndx`` of the object drawn there (checked on real samples), so ``name_ndx`` is the
source code. ``scene`` is a list such as ``['outdoor', 'urban', 'street']``.
"""
from __future__ import annotations

import io
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)


@dataclass
class ImageAnnotation:
    """What one JSON says: codes per part level (0 = objects) with their names, and the scene."""

    levels: dict = field(default_factory=dict)  # level -> {code: name}
    scene: str = ""


def scene_name(scene) -> str:
    """The scene of a 2021 JSON: drop the indoor/outdoor tag and the top-level group.

    ``['outdoor', 'urban', 'street']`` -> ``street``; longer lists keep the tail joined by
    ``/`` (the 2016 style, e.g. ``wrestling_ring/indoor``); a plain string is kept.
    Empty or ``~``-prefixed names mean unlabeled (returned as '').
    """
    if isinstance(scene, str):
        name = scene
    else:
        parts = [str(s) for s in (scene or []) if str(s).strip()]
        if len(parts) >= 3:
            name = "/".join(parts[2:])
        elif parts:
            name = parts[-1]
        else:
            name = ""
    name = name.strip()
    return "" if not name or name.startswith("~") else name


def read_annotation(path: Path) -> ImageAnnotation:
    """Parse ``X.json``; ValueError naming the file and the field when malformed."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8", errors="replace"))
        ann = data["annotation"]
        objs = ann.get("object", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an ADE20K annotation JSON ({e.__class__.__name__}: {e})") from None
    out = ImageAnnotation(scene=scene_name(ann.get("scene")))
    for i, o in enumerate(objs):
        try:
            code = int(o["name_ndx"])
            level = int((o.get("parts") or {}).get("part_level", 0))
            name = str(o["name"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: object {i} lacks a valid name/name_ndx/part_level ({e})") from None
        out.levels.setdefault(level, {}).setdefault(code, name)
    return out


def find_annotations(images_root: Path) -> list:
    """Relative paths (POSIX) of every ``X.json`` under images/ADE, sorted.

    Folders that are symbolic links are followed (a release spread over disks and linked into one
    tree keeps every image; the original build opened whatever paths its index named, links
    included). Each real folder is read once: a link back into a folder already read (a loop) or
    a second path to one is skipped, with one warning naming them (docs/format.md, "ADE20K,
    release 2021").
    """
    found = []
    seen: set = set()
    skipped = []
    for dirpath, dirnames, filenames in os.walk(images_root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            skipped.append(Path(dirpath).relative_to(images_root).as_posix())
            continue
        seen.add(real)
        dirnames.sort()
        for fn in filenames:
            if fn.endswith(".json"):
                found.append(Path(dirpath, fn).relative_to(images_root).as_posix())
    if skipped:
        log.warning("ade20k 2021: %d folder(s) under %s lead to a folder already read (a symbolic link loop or "
                    "a second link to it) and were skipped: %s", len(skipped), images_root, ", ".join(sorted(skipped)[:5]))
    return sorted(found)


# --------------------------------------------------------------------------- pickle
_ALLOWED = {
    ("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                              "int", "float", "complex", "bool", "slice", "object")
} | {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds dict/list/str/number builtins and numpy arrays/dtypes."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the ADE20K index pickle")


def load_index_pickle(path: Path) -> dict:
    """Load ``index_ade20k.pkl`` with :class:`RestrictedUnpickler`; ValueError naming the file on failure."""
    try:
        data = RestrictedUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: cannot load the ADE20K index pickle ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict, got {type(data).__name__}")
    return data


def names_offset(objectnames: list, samples: dict) -> Optional[int]:
    """The k with ``objectnames[code - k] == name`` for every sampled (code, name); None if neither 0 nor 1 fits."""
    for k in (1, 0):
        if all(0 <= c - k < len(objectnames) and str(objectnames[c - k]) == n for c, n in samples.items()):
            return k
    return None
