"""Safe, resumable extraction of tar (plain or gzip) and zip archives.

Safety: every member is checked before anything is written. A member whose name is
absolute (``/x``, ``C:x``), contains ``..`` leading out of the target, is a symlink or
hardlink whose target leaves the extraction folder (or is absolute), or is a device,
FIFO or other special file raises :class:`UnsafeArchiveError` naming the archive and the
member; the partial extraction is deleted and nothing reaches the target. Tar members
are additionally passed through Python's ``data`` extraction filter where it exists.

Resumability: an archive is extracted into a fresh temporary folder next to the target
(``<target>/.extracting-<name>``), then its top-level entries are moved into the target
(merging into folders that already exist, so several archives can extract side by side),
and finally a marker ``<target>/.extracted/<name>.json`` records the archive's size and
sha256 (``<name>``: the ``name`` argument, e.g. the resource filename with '/' -> '__',
else the archive's file name). An interrupted extraction has no marker: it is redone from scratch (a stale
temporary folder is removed first; the merge step overwrites, so redoing it is harmless).
A marker whose recorded size/sha256 matches the archive means the work is done.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import BrodenError
from ..store.atomic import atomic_write_text
from .registry import archive_kind
from .transfer import file_digest

log = logging.getLogger(__name__)

MARKER_DIR = ".extracted"


class UnsafeArchiveError(BrodenError, ValueError):
    """An archive member would escape the extraction folder or is a special file; names the member."""


class ArchiveError(BrodenError, ValueError):
    """An archive cannot be read (corrupt, truncated, unknown format); names the file."""


class ExtractLimitError(UnsafeArchiveError):
    """An unverified archive would expand beyond the extraction limits (a decompression bomb?)."""


GIB = 1 << 30
#: Below this total, a high compression ratio is harmless (tiny text files compress well).
RATIO_FLOOR = 16 << 20


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what an archive without a registered checksum may expand to (a zip bomb is refused before it fills the disk).

    Checked from the archive's index before anything is written (zip and tar record each
    member's size; zipfile never yields more than the recorded size). Refused: a total
    above ``max_bytes``, more than ``max_members`` members, or a total above 16 MiB that
    is more than ``max_ratio`` times the archive's size. Archives whose sha256 is
    registered in checksums.tsv are known and are not bounded.
    ``broden build/download --max-extract-gib/--max-extract-ratio/--max-extract-members`` raise them.
    """

    max_bytes: int = 32 * GIB
    max_ratio: float = 100.0
    max_members: int = 1_000_000

    def check(self, archive: Path, total: int, members: int) -> None:
        size = max(archive.stat().st_size, 1)
        hint = ("; if you trust it, register its checksum (broden checksums --register) or raise the limit "
                "(--max-extract-gib, --max-extract-ratio, --max-extract-members)")
        if members > self.max_members:
            raise ExtractLimitError(f"{archive}: holds {members} members, more than the {self.max_members} allowed "
                                    f"for an unverified archive{hint}")
        if total > self.max_bytes:
            raise ExtractLimitError(f"{archive}: would expand to {total / GIB:.2f} GiB, more than the "
                                    f"{self.max_bytes / GIB:.2f} GiB allowed for an unverified archive{hint}")
        if total > RATIO_FLOOR and total / size > self.max_ratio:
            raise ExtractLimitError(f"{archive}: would expand {total / size:.0f}-fold ({size} bytes -> {total} bytes), "
                                    f"more than the {self.max_ratio:g}-fold allowed for an unverified archive{hint}")


def _normalized(name: str) -> Optional[str]:
    """POSIX-normalised relative member name, or None when it is absolute or escapes."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def check_member(archive: str, name: str, *, link: Optional[str] = None, hardlink: bool = False,
                 special: bool = False) -> str:
    """Validate one member; return its normalised name or raise UnsafeArchiveError."""
    norm = _normalized(name)
    if norm is None:
        raise UnsafeArchiveError(f"{archive}: refusing member {name!r}: its path leaves the extraction folder")
    if special:
        raise UnsafeArchiveError(f"{archive}: refusing member {name!r}: device, FIFO or other special file")
    if link is not None:
        if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
            raise UnsafeArchiveError(f"{archive}: refusing link {name!r} -> {link!r}: absolute link target")
        # symlinks resolve relative to the member's folder, hardlinks relative to the archive root
        base = "" if hardlink else posixpath.dirname(norm)
        if _normalized(posixpath.join(base, link)) is None:
            kind = "hardlink" if hardlink else "symlink"
            raise UnsafeArchiveError(f"{archive}: refusing {kind} {name!r} -> {link!r}: it points outside the extraction folder")
    return norm


def _check_tar(archive: Path, tf: tarfile.TarFile, limits: Optional[ExtractLimits] = None) -> int:
    n = total = 0
    for m in tf:
        special = not (m.isfile() or m.isdir() or m.issym() or m.islnk())
        link = m.linkname if (m.issym() or m.islnk()) else None
        check_member(archive.name, m.name, link=link, hardlink=m.islnk(), special=special)
        n += 1
        total += m.size if m.isfile() else 0
        if limits is not None and n > limits.max_members:
            break  # reported below without reading the rest of the index
    if limits is not None:
        limits.check(archive, total, n)
    return n


def _zip_symlink_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Optional[str]:
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_ISLNK(mode):
        return zf.read(info).decode("utf-8", "replace")
    return None


def _check_zip(archive: Path, zf: zipfile.ZipFile, limits: Optional[ExtractLimits] = None) -> int:
    infos = zf.infolist()
    if limits is not None:  # from the central directory, before any member is read
        limits.check(archive, sum(i.file_size for i in infos), len(infos))
    for info in infos:
        mode = info.external_attr >> 16
        special = info.create_system == 3 and stat.S_IFMT(mode) != 0 and not (
            stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))
        check_member(archive.name, info.filename, link=_zip_symlink_target(zf, info), special=special)
    return len(infos)


def _marker(target: Path, name: str) -> Path:
    return target / MARKER_DIR / (name + ".json")


def _key(archive: Path, name: Optional[str]) -> str:
    """Marker / temp-folder name: ``name`` (e.g. a resource filename, '/' -> '__') or the archive's name."""
    key = (name or archive.name).replace("/", "__").replace("\\", "__")
    if key in ("", ".", "..") or key.startswith("."):
        raise ValueError(f"bad extraction name {name!r}")
    return key


def is_extracted(archive: Union[str, Path], target: Union[str, Path], digest: Optional[tuple] = None,
                 name: Optional[str] = None) -> bool:
    """True when ``target`` holds a completed extraction of this very archive (same size and sha256)."""
    archive, target = Path(archive), Path(target)
    m = _marker(target, _key(archive, name))
    if not m.exists():
        return False
    try:
        rec = json.loads(m.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    if rec.get("size") != archive.stat().st_size:
        return False
    size, sha = digest or file_digest(archive)
    return rec.get("sha256") == sha


def _merge(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``: rename when free, merge folders, replace files."""
    if dst.is_dir() and not dst.is_symlink() and src.is_dir() and not src.is_symlink():
        for child in sorted(src.iterdir()):
            _merge(child, dst / child.name)
        src.rmdir()
        return
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


def extract_archive(archive: Union[str, Path], target: Union[str, Path], *, progress: bool = True,
                    force: bool = False, name: Optional[str] = None,
                    limits: Optional[ExtractLimits] = None) -> Path:
    """Safely extract a .tar/.tar.gz/.tgz/.zip into ``target`` (see module docstring); returns ``target``.

    ``limits``: bounds for an unverified archive (ExtractLimits; raises ExtractLimitError
    before anything is written). None: no bounds (the archive's sha256 was verified).

    ``name`` (default: the archive's file name; '/' becomes '__') names the marker and the
    temporary folder: give distinct names to archives sharing a file name and a target.
    """
    archive, target = Path(archive), Path(target)
    key = _key(archive, name)
    kind = archive_kind(archive.name)
    if kind is None:
        raise ArchiveError(f"{archive}: not a .tar, .tar.gz, .tgz or .zip archive")
    digest = file_digest(archive)
    if not force and is_extracted(archive, target, digest, name):
        log.info("%s: already extracted into %s", archive.name, target)
        return target
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".extracting-{key}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if kind == "tar":
            _extract_tar(archive, tmp, progress, limits)
        else:
            _extract_zip(archive, tmp, progress, limits)
        for child in sorted(tmp.iterdir()):
            _merge(child, target / child.name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(_marker(target, key), json.dumps({"archive": archive.name, "size": digest[0],
                                                            "sha256": digest[1]}, indent=1) + "\n")
    return target


def _bar(desc: str, enabled: bool, total: Optional[int] = None):
    if not enabled:
        return None
    from ..progress import progress

    return progress(desc=f"extract {desc}", total=total, unit="file", leave=False)


def _extract_tar(archive: Path, tmp: Path, progress: bool, limits: Optional[ExtractLimits] = None) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            n = _check_tar(archive, tf, limits)  # reads the whole index first: nothing is written for an unsafe archive
            bar = _bar(archive.name, progress, n)
            try:
                for m in tf.getmembers():
                    if hasattr(tarfile, "data_filter"):
                        tf.extract(m, tmp, set_attrs=m.isfile() or m.isdir(), filter="data")
                    else:  # pragma: no cover (Python without extraction filters)
                        tf.extract(m, tmp, set_attrs=m.isfile() or m.isdir())
                    if bar is not None:
                        bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
    except tarfile.FilterError as e:  # defence in depth: the data filter refused something
        raise UnsafeArchiveError(f"{archive.name}: refusing member: {e}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ArchiveError(f"{archive}: cannot read the tar archive ({type(e).__name__}: {e})") from None


def _inside(archive: Path, member: str, root: str, real: str) -> None:
    if os.path.commonpath([root, real]) != root:
        raise UnsafeArchiveError(f"{archive.name}: refusing member {member!r}: through links it leads outside the extraction folder")


def _extract_zip(archive: Path, tmp: Path, progress: bool, limits: Optional[ExtractLimits] = None) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            n = _check_zip(archive, zf, limits)
            root = os.path.realpath(tmp)
            bar = _bar(archive.name, progress, n)
            try:
                for info in zf.infolist():
                    link = _zip_symlink_target(zf, info)
                    dest = tmp.joinpath(*_normalized(info.filename).split("/"))
                    # links created by earlier members must not carry this one outside (realpath check)
                    _inside(archive, info.filename, root, os.path.realpath(dest.parent))
                    if link is not None:
                        _inside(archive, info.filename, root, os.path.realpath(dest.parent / link))
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        if dest.exists() or dest.is_symlink():
                            dest.unlink()
                        os.symlink(link, dest)
                    else:
                        zf.extract(info, tmp)
                    if bar is not None:
                        bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
    except (zipfile.BadZipFile, EOFError) as e:
        raise ArchiveError(f"{archive}: cannot read the zip archive ({type(e).__name__}: {e})") from None


def verify_archive(archive: Union[str, Path]) -> int:
    """Read every member of an archive (integrity check); returns the member count or raises ArchiveError."""
    archive = Path(archive)
    kind = archive_kind(archive.name)
    try:
        if kind == "tar":
            n = 0
            with tarfile.open(archive, "r:*") as tf:
                for m in tf:
                    if m.isfile():
                        f = tf.extractfile(m)
                        while f is not None and f.read(1 << 20):
                            pass
                    n += 1
            return n
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise ArchiveError(f"{archive}: member {bad!r} fails its CRC check")
                return len(zf.infolist())
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise ArchiveError(f"{archive}: corrupt archive ({type(e).__name__}: {e})") from None
    raise ArchiveError(f"{archive}: not a .tar, .tar.gz, .tgz or .zip archive")
