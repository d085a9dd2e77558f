"""Confinement of paths: what a store names stays inside the store, what we name stays one folder.

Two rules, so that nothing read or written leaves the store or ``--out``:

- Every path read from a store's tables (an ``index.csv`` image or segmentation cell) is
  relative to ``STORE/images`` and must stay there: no absolute path, no drive letter, no
  backslash, no ``..`` component, and, once symlinks are followed, the real path must lie
  under the real ``STORE/images``. :func:`check_relpath` does the lexical part when the
  table is read (cheap, every row), :func:`confined` both parts before a file is opened.
- A name we turn into one path component (a source ``prefix``, ``dissect score --name``,
  a layer's result folder) is a single safe component: :func:`safe_component`. A category
  name becomes ``c_<category>.csv`` and ``<image>_<category>.png``: :func:`safe_category`
  (a value read from a recipe or a store never names a file outside the store or ``--out``),
  checked by the recipe schema, the build, the writer and the reader.
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
    _refuse_special(rel, None, what, path)
    return path


def special_file(path: Union[str, Path], mode: Optional[int] = None) -> Optional[str]:
    """What ``path`` is when it exists but is not a regular file ("a FIFO", "a folder", ...), else None.
    Opening a FIFO blocks until a writer comes: such files are refused before they are opened
    (no input may hang a command: a non-regular file is named, not waited on)."""
    if mode is None:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None  # missing: opening it reports that, naming the file
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class NotRegularFileError(UnsafePathError):
    """A path names a FIFO, folder, socket or device where a file is expected (opening it could block)."""


def _refuse_special(rel: str, mode: Optional[int], what: str, path: Optional[Path] = None) -> None:
    kind = special_file(path, None) if mode is None else special_file("", mode)
    if kind is not None:
        raise NotRegularFileError(f"{what} {rel!r} is {kind}, not a regular file")


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
                mode = os.lstat(path).st_mode
            except OSError:  # missing: opening it reports that, naming the file
                return path
            if not stat.S_ISLNK(mode):
                _refuse_special(rel, mode, what)
                return path
        real = os.path.realpath(path)
        if self._inside(real):
            _refuse_special(rel, None, what, path)
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
        raise UnsafePathError(
            f"{what} {name!r} is not a single safe folder name "
            "(no '/', '\\', '..', leading '.', control characters or drive letter)"
        )
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
