"""Resources and checksum files: what a source downloads, and the ``checksums.tsv`` that records it.

``checksums.tsv`` is tab-separated with the columns ``url  size  sha256  filename``; lines
starting with ``#`` and blank lines are comments; an optional header row naming the columns
is skipped. ``size`` and ``sha256`` may be empty while no checksum has been published or
registered (``broden checksums --register SOURCE`` fills them in). ``filename`` is where the
file goes under the download folder: a relative path with ``/`` separators, no ``..``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, List, Optional, Union
from urllib.parse import urlsplit

from ..errors import BrodenError
from ..store.atomic import atomic_write_text

COLUMNS = ("url", "size", "sha256", "filename")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ChecksumsFileError(BrodenError, ValueError):
    """A checksums file is malformed; the message names the file, the line and the value."""


def check_relative_name(name: str, what: str = "filename") -> str:
    """Return ``name`` if it is a safe relative POSIX path (no absolute path, drive, ``..`` or empty part)."""
    if not name or "\\" in name or "\x00" in name:
        raise ValueError(f"unsafe {what} {name!r}: empty, backslash or NUL")
    p = PurePosixPath(name)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"unsafe {what} {name!r}: absolute path")
    if any(part in ("..", "") for part in name.split("/")) or name.startswith("./"):
        raise ValueError(f"unsafe {what} {name!r}: '..', '.' prefix or empty component")
    return name


@dataclass(frozen=True)
class Resource:
    """One downloadable file: where it comes from, what it must hash to, and its name on disk.

    ``size`` (bytes) and ``sha256`` (lower-case hex) are None while unknown. ``filename``
    defaults to the last component of the URL path.
    """

    url: str
    filename: str = ""
    size: Optional[int] = None
    sha256: Optional[str] = None

    def __post_init__(self):
        if not self.filename:
            name = PurePosixPath(urlsplit(self.url).path).name
            if not name:
                raise ValueError(f"resource {self.url!r}: the URL has no file name; give a filename")
            object.__setattr__(self, "filename", name)
        check_relative_name(self.filename)
        if self.sha256 is not None:
            sha = self.sha256.strip().lower()
            if not _HEX64.match(sha):
                raise ValueError(f"resource {self.filename}: sha256 must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", sha)
        if self.size is not None and (not isinstance(self.size, int) or self.size < 0):
            raise ValueError(f"resource {self.filename}: size must be a non-negative int, got {self.size!r}")

    @property
    def verified(self) -> bool:
        """True when both size and sha256 are known."""
        return self.size is not None and self.sha256 is not None

    def path_in(self, directory: Union[str, Path]) -> Path:
        """Where this resource lives under ``directory``."""
        return Path(directory).joinpath(*self.filename.split("/"))


def _read_text(src) -> tuple:
    """(text, display name) from a path or an importlib.resources Traversable."""
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        try:
            return p.read_text("utf-8"), str(p)
        except FileNotFoundError:
            raise ChecksumsFileError(f"{p}: checksums file not found") from None
    if hasattr(src, "read_text"):
        return src.read_text(encoding="utf-8"), str(src)
    raise TypeError(f"expected a path or a package resource, got {type(src).__name__}")


def parse_checksums(text: str, origin: str = "<checksums>") -> List[Resource]:
    """Parse checksums.tsv text; errors name ``origin`` and the line."""
    out: List[Resource] = []
    seen = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split("\t")
        if tuple(c.strip().lower() for c in cols[:4]) == COLUMNS:
            continue  # header row
        if len(cols) != 4:
            raise ChecksumsFileError(
                f"{origin}:{lineno}: expected 4 tab-separated columns (url, size, sha256, filename), got {len(cols)}: {line!r}")
        url, size_s, sha, name = (c.strip() for c in cols)
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
            raise ChecksumsFileError(f"{origin}:{lineno}: url {url!r} is not an absolute URL")
        size = None
        if size_s:
            if not size_s.isdigit():
                raise ChecksumsFileError(f"{origin}:{lineno}: size {size_s!r} is not a non-negative integer")
            size = int(size_s)
        if sha and not _HEX64.match(sha.lower()):
            raise ChecksumsFileError(f"{origin}:{lineno}: sha256 {sha!r} is not 64 hex digits")
        try:
            res = Resource(url=url, filename=name, size=size, sha256=sha.lower() or None)
        except ValueError as e:
            raise ChecksumsFileError(f"{origin}:{lineno}: {e}") from None
        if res.filename in seen:
            raise ChecksumsFileError(
                f"{origin}:{lineno}: filename {res.filename!r} already used on line {seen[res.filename]}")
        seen[res.filename] = lineno
        out.append(res)
    return out


def load_checksums(src) -> List[Resource]:
    """Read a checksums.tsv from a path or an ``importlib.resources`` Traversable, in file order."""
    text, origin = _read_text(src)
    return parse_checksums(text, origin)


def format_row(res: Resource) -> str:
    return "\t".join([res.url, "" if res.size is None else str(res.size), res.sha256 or "", res.filename])


def update_checksums_file(path: Union[str, Path], updates: Iterable[Resource]) -> int:
    """Rewrite ``path`` atomically with the size/sha256 of ``updates`` (matched by filename).

    Comments, blank lines and row order are kept. Returns the number of rows changed.
    Raises ChecksumsFileError when an update names a filename that is not in the file.
    """
    path = Path(path)
    text, origin = _read_text(path)
    parse_checksums(text, origin)  # validate first
    pending = {r.filename: r for r in updates}
    lines = text.splitlines()
    changed = 0
    for i, raw in enumerate(lines):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        cols = raw.split("\t")
        if len(cols) != 4 or tuple(c.strip().lower() for c in cols) == COLUMNS:
            continue
        name = cols[3].strip()
        if name in pending:
            new = pending.pop(name)
            row = format_row(Resource(url=cols[0].strip(), filename=name, size=new.size, sha256=new.sha256))
            if row != raw:
                lines[i] = row
                changed += 1
    if pending:
        raise ChecksumsFileError(f"{path}: no row for filename(s) {sorted(pending)}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return changed


def write_checksums_file(path: Union[str, Path], resources: Iterable[Resource], header: str = "") -> None:
    """Write a new checksums.tsv atomically (``header`` lines are written as '#' comments)."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    lines.append("# " + "\t".join(COLUMNS))
    lines += [format_row(r) for r in resources]
    atomic_write_text(path, "\n".join(lines) + "\n")


def archive_kind(filename: str) -> Optional[str]:
    """'tar', 'zip' or None, from the file name (.tar, .tar.gz, .tgz, .zip)."""
    low = filename.lower()
    if low.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if low.endswith(".zip"):
        return "zip"
    return None
