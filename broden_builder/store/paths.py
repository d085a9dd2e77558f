"""Confinement of paths: what a store names stays inside the store, what we name stays one folder.

Two rules (issue 15, items 4 and 5):

- Every path read from a store's tables (an ``index.csv`` image or segmentation cell) is
  relative to ``STORE/images`` and must stay there: no absolute path, no drive letter, no
  backslash, no ``..`` component, and, once symlinks are followed, the real path must lie
  under the real ``STORE/images``. :func:`check_relpath` does the lexical part when the
  table is read (cheap, every row), :func:`confined` both parts before a file is opened.
- A name we turn into one path component (a source ``prefix``, ``dissect score --name``,
  a layer's result folder) is a single safe component: :func:`safe_component`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

from ..errors import BrodenError


class UnsafePathError(BrodenError, ValueError):
    """A path would leave the folder it must stay in; the message names the path and the folder."""


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relpath(rel: str) -> Optional[str]:
    """Why ``rel`` (a store path relative to images/) is not a confined relative path; None when it is."""
    if not rel:
        return "empty path"
    if "\x00" in rel:
        return "path contains a NUL byte"
    if "\\" in rel:
        return "path contains a backslash (store paths use '/')"
    if rel.startswith("/") or _DRIVE.match(rel):
        return "absolute path"
    if any(part == ".." for part in rel.split("/")):
        return "path contains '..'"
    return None


def confined(base: Union[str, Path], rel: str, what: str = "path") -> Path:
    """``base / rel`` after checking that it stays inside ``base`` (lexically and through symlinks).

    Raises UnsafePathError naming ``rel`` and ``base``.
    """
    base = Path(base)
    why = check_relpath(rel)
    if why is not None:
        raise UnsafePathError(f"{what} {rel!r} leaves {base}: {why}")
    path = base / rel
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    if os.path.commonpath([real_base, real]) != real_base:
        raise UnsafePathError(f"{what} {rel!r} leaves {base}: through a symbolic link it resolves to {real}")
    return path


_BAD_COMPONENT = re.compile(r"[/\\\x00-\x1f]")


def safe_component(name: str, what: str = "name") -> str:
    """Return ``name`` when it is one safe path component; raise UnsafePathError naming ``what`` otherwise.

    Refused: empty, '.', '..', names starting with '.' (hidden, and the store's own work
    folders are hidden), names holding '/', '\\\\', control characters, or a drive letter.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{what} must be a non-empty name, got {name!r}")
    if name in (".", "..") or name.startswith(".") or _BAD_COMPONENT.search(name) or _DRIVE.match(name):
        raise UnsafePathError(f"{what} {name!r} is not a single safe folder name "
                              "(no '/', '\\', '..', leading '.', control characters or drive letter)")
    return name
