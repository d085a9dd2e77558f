"""Acquisition: obtain a recipe's missing sources (fetch + extract) and register their checksums.

Above both ``download/`` (transfers, checksums, extraction) and ``sources/`` (what each source
needs): used by the build and by ``broden download`` / ``broden checksums``.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .download.extract import ArchiveError, UnsafeArchiveError, verify_archive
from .download.registry import ChecksumsFileError, Resource, archive_kind, load_checksums, update_checksums_file
from .download.transfer import DownloadError, OfflineError, fetch, file_digest
from .sources import get_source_class
from .sources.downloadable import DownloadableSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadOptions:
    """How the build may obtain missing sources.

    ``enabled=False`` never downloads; ``offline=True`` uses only files already in the
    download folders (verified, then extracted) and reports what to put where;
    ``mirror`` follows the rule of :mod:`broden_builder.download.transfer` (None: ``$BRODEN_MIRROR``).
    """

    enabled: bool = True
    mirror: Optional[str] = None
    offline: bool = False
    progress: bool = True
    retries: int = 5
    timeout: float = 60.0
    #: bounds for archives without a registered sha256 (None: the defaults of ExtractLimits)
    extract_limits: Optional[object] = None


def prepare_sources(sources: Sequence, options: DownloadOptions, allow_missing: bool = False,
                    force: bool = False) -> Dict[str, str]:
    """Fetch and extract every DownloadableSource whose ``check()`` fails (all of them with ``force``).

    Returns ``{source key: 'present' | 'downloaded' | 'skipped' | 'failed'}``. Failures are
    collected over all sources and raised together as DownloadError (OfflineError when all
    are offline instructions); with ``allow_missing`` they are logged instead and the
    build's own check reports the source as missing.
    """
    status: Dict[str, str] = {}
    errors: List[str] = []
    offline_only = True
    if not options.enabled:
        return status
    for src in sources:
        if not isinstance(src, DownloadableSource):
            continue
        key = getattr(src, "key", type(src).__name__)
        if not src.download_allowed():
            status[key] = "skipped"
            continue
        if not force and src.is_present():
            status[key] = "present"
            continue
        try:
            files = src.fetch_all(mirror=options.mirror, offline=options.offline, progress=options.progress,
                                  retries=options.retries, timeout=options.timeout)
            src.extract_all(files, progress=options.progress, limits=options.extract_limits)
            status[key] = "downloaded"
        except OfflineError as e:
            status[key] = "failed"
            errors.append(str(e).rstrip())
        except (DownloadError, UnsafeArchiveError, ArchiveError, ChecksumsFileError, OSError) as e:
            status[key] = "failed"
            offline_only = False
            errors.append(f"source {key}: {e}")
    if errors:
        msg = "\n".join(errors)
        if allow_missing:
            log.warning("could not obtain some sources:\n%s", msg)
        else:
            raise (OfflineError if offline_only else DownloadError)(msg)
    return status


def register_checksums(source_type: str, from_: Optional[str] = None, dest: Optional[Path] = None, *,
                       force: bool = False, progress: bool = True, retries: int = 5) -> List[Resource]:
    """Record size and sha256 of a source's files into its checksums.tsv (atomic rewrite).

    Only rows lacking size/sha256 are registered (all rows with ``force``). Each file is
    taken from ``from_`` when it is a local folder (``from_/filename``), else downloaded
    (``from_`` as a mirror URL, else the row's URL) into ``dest`` (kept) or a temporary
    folder (deleted). A file counts as verified when the transfer was complete (its
    Content-Length was received), it matches any size already recorded, and, for
    archives, every member can be read. Returns the resources written.
    """
    cls = get_source_class(source_type)
    if not (isinstance(cls, type) and issubclass(cls, DownloadableSource)):
        raise DownloadError(f"source {source_type!r} declares no downloadable files (not a DownloadableSource)")
    path = cls.checksums_path()
    rows = load_checksums(path)
    todo = [r for r in rows if force or r.sha256 is None or r.size is None]
    if not todo:
        log.info("%s: every row already has a size and sha256", path)
        return []
    local = Path(from_).expanduser() if from_ and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", from_) else None
    if local is not None and not local.is_dir():
        raise DownloadError(f"--from {from_}: not a folder (give a folder holding the files, or a mirror URL)")
    tmp = None
    if local is None and dest is None:
        tmp = Path(tempfile.mkdtemp(prefix="broden-register-"))
    out = []
    try:
        for r in todo:
            if local is not None:
                f = r.path_in(local)
                if not f.is_file():
                    raise DownloadError(f"{r.filename}: expected it at {f} (from {r.url})")
            else:
                # a published sha256/size is checked during the download (unless --force)
                probe = Resource(url=r.url, filename=r.filename, size=None if force else r.size,
                                 sha256=None if force else r.sha256)
                f = fetch(probe, dest if dest is not None else tmp, mirror=from_ or "", progress=progress,
                          retries=retries)
            size, sha = file_digest(f)
            if r.size is not None and not force and size != r.size:
                raise DownloadError(f"{f}: size {size} differs from the recorded {r.size} bytes; not registering")
            if r.sha256 is not None and not force and sha != r.sha256:
                raise DownloadError(f"{f}: sha256 {sha} differs from the recorded {r.sha256}; not registering")
            if archive_kind(r.filename):
                verify_archive(f)
            out.append(Resource(url=r.url, filename=r.filename, size=size, sha256=sha))
            log.info("%s: %d bytes, sha256 %s", r.filename, size, sha)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    update_checksums_file(path, out)
    return out
