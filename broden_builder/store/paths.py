"""Confinement of paths: what a store names stays inside the store, what we name stays one folder.

Two rules (issue 15, items 4 and 5):

- Every path read from a store's tables (an ``index.csv`` image or segmentation cell) is
  relative to ``STORE/images`` and must stay there: no absolute path, no drive letter, no
  backslash, no ``..`` component, and, once symlinks are followed, the real path must lie
  under the real ``STORE/images``. :func:`check_relpath` does the lexical part when the
  table is read (cheap, every row), :func:`confined` both parts before a file is opened.
- A name we turn into one path component (a source ``prefix``, ``dissect score --name``,
  a layer's result folder) is a single safe component: :func:`safe_component`. A category
  name becomes ``c_<category>.csv`` and ``<image>_<category>.png``: :func:`safe_category`
  (issue 25), checked by the recipe schema, the build, the writer and the reader.
"""
from __future__ import annotations

import os
import re
import stat
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


class Confinement:
    """:func:`confined` for many paths under one ``base``, at a fraction of its cost: the base and
    each parent folder are resolved once (cached), the file itself is only ``lstat``-ed, and a file
    that is a symbolic link gets the full check. Same rules, same errors."""

    def __init__(self, base: Union[str, Path]):
        self.base = Path(base)
        self._real_base: Optional[str] = None
        self._dirs: dict = {}  # parent folder (relative) -> whether its real path lies inside the base

    def _inside(self, real: str) -> bool:
        return os.path.commonpath([self._real_base, real]) == self._real_base

    def __call__(self, rel: str, what: str = "path") -> Path:
        why = check_relpath(rel)
        if why is not None:
            raise UnsafePathError(f"{what} {rel!r} leaves {self.base}: {why}")
        if self._real_base is None:
            self._real_base = os.path.realpath(self.base)
        path = self.base / rel
        parent = rel.rpartition("/")[0]
        if parent not in self._dirs:
            self._dirs[parent] = self._inside(os.path.realpath(self.base / parent) if parent else self._real_base)
        if self._dirs[parent]:
            try:
                if not stat.S_ISLNK(os.lstat(path).st_mode):
                    return path
            except OSError:  # missing: opening it reports that, naming the file
                return path
        real = os.path.realpath(path)
        if self._inside(real):
            return path
        raise UnsafePathError(f"{what} {rel!r} leaves {self.base}: through a symbolic link it resolves to {real}")


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


_CELL_SYNTAX = re.compile(r"[;()\s,]")


def safe_category(name: str, what: str = "category") -> str:
    """Return ``name`` when it can name a category: one safe path component (:func:`safe_component`;
    it becomes ``c_<name>.csv`` and part of label PNG names) without ``;``, ``(``, ``)``, ``,`` or
    white space (the syntax of label.csv's ``cat(count);...`` cells). Raises UnsafePathError."""
    safe_component(name, what)
    if _CELL_SYNTAX.search(name):
        raise UnsafePathError(f"{what} {name!r} is not a valid category name (no ';', '(', ')', ',' or white space)")
    return name
