"""HTTP transfer (urllib only): resumable, verified, retried downloads, one file or many.

Contract of :func:`fetch`:

* The file is written to ``<dest>.part`` and renamed to ``<dest>`` only once complete and
  verified. An existing ``.part`` is resumed with an HTTP ``Range`` request; a server that
  answers 200 instead of 206 restarts it from zero.
* Size and sha256 are checked when the resource knows them. A mismatch raises
  :class:`ChecksumError` (naming URL, file, expected and actual values) and deletes the file:
  nothing bad is kept. An already present ``<dest>`` is re-verified and reused when good.
* Transient failures (connection errors, timeouts, a cut connection, HTTP 408/429/5xx) are
  retried up to ``retries`` times, sleeping ``backoff * 2**k`` seconds (capped at
  ``max_backoff``); an attempt that received bytes resets the count. HTTP 4xx fails at once.
* ``offline=True`` never opens a connection: a present, verified file is returned, otherwise
  :class:`OfflineError` says which file to put where. A host name that does not resolve (no
  network, no DNS) raises the same OfflineError at once, without retries.

Mirror rule: with a mirror ``M`` (argument, else ``$BRODEN_MIRROR``), the URL
``scheme://host[:port]/path?query`` is fetched from ``M + '/' + host[:port] + '/path'``
(the query is dropped). This is the layout ``wget -x`` / ``wget --mirror`` produce, and it
keeps equal file names from different hosts apart. ``M`` may be a URL or a local folder.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from .. import __version__
from ..errors import BrodenError
from .registry import Resource

log = logging.getLogger(__name__)

MIRROR_ENV = "BRODEN_MIRROR"
CHUNK = 1 << 20
USER_AGENT = f"broden-dissect/{__version__} (+urllib)"
_sleep = time.sleep  # patched in tests


class DownloadError(BrodenError, RuntimeError):
    """A file could not be downloaded; the message names the URL and the destination."""


class ChecksumError(DownloadError):
    """A downloaded file has the wrong size or sha256 (it has been deleted)."""

    def __init__(self, url: str, path: Path, what: str, expected, actual):
        self.url, self.path, self.what, self.expected, self.actual = url, Path(path), what, expected, actual
        super().__init__(f"{what} mismatch for {path.name} downloaded from {url}: expected {expected}, got {actual}; "
                         f"the file was deleted ({path})")

    def __reduce__(self):  # rebuilt from its own arguments, so it crosses processes unchanged
        return type(self), (self.url, self.path, self.what, self.expected, self.actual)


class OfflineError(DownloadError):
    """Offline mode and a file is missing; the message says which file to put where."""


class _Transient(Exception):
    """Internal: an attempt failed in a way worth retrying."""


class _Unresolved(Exception):
    """Internal: the host name does not resolve (no network or no DNS): retrying cannot help."""


# --------------------------------------------------------------------------- mirror
def mirror_from_env(mirror: Optional[str] = None) -> Optional[str]:
    """The mirror to use: ``mirror`` if given (``""`` disables), else ``$BRODEN_MIRROR``, else None."""
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    return mirror or None


def mirror_url(url: str, mirror: Optional[str]) -> str:
    """Apply the mirror rule: ``mirror/host[:port]/path`` (query dropped); ``url`` when no mirror."""
    if not mirror:
        return url
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", mirror):
        mirror = Path(mirror).expanduser().resolve().as_uri()
    parts = urlsplit(url)
    return mirror.rstrip("/") + "/" + parts.netloc + (parts.path if parts.path.startswith("/") else "/" + parts.path)


# --------------------------------------------------------------------------- hashing
def file_digest(path: Union[str, Path], chunk: int = CHUNK) -> Tuple[int, str]:
    """(size in bytes, sha256 hex) of a file."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            n += len(b)
    return n, h.hexdigest()


def verify_file(path: Path, res: Resource, url: Optional[str] = None, delete: bool = True) -> None:
    """Check size then sha256 (when known); on mismatch delete ``path`` (if ``delete``) and raise ChecksumError."""
    url = url or res.url
    size = path.stat().st_size
    if res.size is not None and size != res.size:
        if delete:
            path.unlink(missing_ok=True)
        raise ChecksumError(url, path, "size", f"{res.size} bytes", f"{size} bytes")
    if res.sha256 is not None:
        _, sha = file_digest(path)
        if sha != res.sha256:
            if delete:
                path.unlink(missing_ok=True)
            raise ChecksumError(url, path, "sha256", res.sha256, sha)


def _progress(total, initial, desc, enabled):
    if not enabled:
        return None
    from ..progress import progress

    return progress(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


# --------------------------------------------------------------------------- one attempt
def _open(url: str, part: Path, offset: int, timeout: float):
    """The response of a request for ``url`` from byte ``offset``; None when the .part is already whole.
    Raises _Transient for what a retry may fix, DownloadError for the rest."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Range not satisfiable: the .part already holds the whole file, or is garbage.
            total = _total_from_content_range(e.headers.get("Content-Range", ""))
            if total is not None and total == offset:
                return None
            part.unlink(missing_ok=True)
            raise _Transient(f"HTTP 416 for a resume at byte {offset}; restarting from zero") from None
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"HTTP {e.code} {e.reason} for {url} (destination {part.with_suffix('')})") from None
    except urllib.error.URLError as e:
        if url.startswith("file:"):
            raise DownloadError(f"cannot read {url}: {e.reason}") from None
        if isinstance(e.reason, socket.gaierror):  # name resolution failed: offline, not a flaky server
            raise _Unresolved(f"host {urlsplit(url).hostname!r} does not resolve ({e.reason})") from None
        raise _Transient(f"connection failed: {e.reason}") from None
    except (ConnectionError, socket.timeout, http.client.HTTPException, TimeoutError) as e:
        raise _Transient(f"{type(e).__name__}: {e}") from None


def _attempt(url: str, part: Path, res: Resource, timeout: float, progress: bool) -> int:
    """One HTTP(S)/file request into ``part`` (resuming it). Returns bytes received; raises _Transient/DownloadError."""
    offset = part.stat().st_size if part.exists() else 0
    if res.size is not None and offset > res.size:
        part.unlink()
        offset = 0
    if res.size is not None and offset == res.size and offset > 0:
        return 0  # the .part is complete (the previous run died before renaming)
    resp = _open(url, part, offset, timeout)
    if resp is None:
        return 0  # the .part already holds the whole file
    received = 0
    bar = None
    try:
        status = getattr(resp, "status", None)
        if offset and status == 206:
            start = _start_from_content_range(resp.headers.get("Content-Range", ""))
            if start is not None and start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start}, not {offset}; restarting")
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the Range request; restarting from zero", url)
            offset = 0
            mode = "wb"
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = offset + expected if expected is not None else res.size
        bar = _progress(total, offset, res.filename, progress)
        with open(part, mode) as f:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (ConnectionError, socket.timeout, http.client.HTTPException, TimeoutError, OSError) as e:
                    raise _Transient(f"connection lost after {offset + received} bytes: {type(e).__name__}: {e}") from None
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if expected is not None and received < expected:
            raise _Transient(f"connection cut after {offset + received} of {offset + expected} bytes")
        return received
    except _Transient as e:
        e.received = received  # type: ignore[attr-defined]
        raise
    finally:
        if bar is not None:
            bar.close()
        resp.close()


def _start_from_content_range(value: str) -> Optional[int]:
    m = re.match(r"^\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _total_from_content_range(value: str) -> Optional[int]:
    m = re.match(r"^\s*bytes\s+[^/]*/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _download_with_retries(url: str, part: Path, res: Resource, timeout: float, progress: bool, retries: int,
                           backoff: float, max_backoff: float) -> None:
    """Attempts until the .part is complete; transient failures retried with exponential backoff (a
    failure after progress restarts the count). Raises DownloadError when giving up."""
    failures = 0
    while True:
        try:
            _attempt(url, part, res, timeout, progress)
            return
        except _Transient as e:
            if getattr(e, "received", 0):
                failures = 0
            failures += 1
            if failures > retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"giving up on {url} after {failures} failed attempt(s): {e} "
                                    + (f"(partial data kept in {part}: {kept} bytes; run again to resume)" if kept
                                       else "(nothing was received; run again to retry)")) from None
            delay = min(max_backoff, backoff * 2 ** (failures - 1))
            log.warning("%s: %s; retry %d/%d in %.1f s", url, e, failures, retries, delay)
            _sleep(delay)


# --------------------------------------------------------------------------- public
def fetch(
    res: Resource,
    dest_dir: Union[str, Path],
    *,
    mirror: Optional[str] = None,
    offline: bool = False,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    timeout: float = 60.0,
    require_checksum: bool = False,
    warn_unverified: bool = True,
) -> Path:
    """Download ``res`` to ``dest_dir/res.filename`` (see the module docstring); returns the path.

    ``mirror=None`` uses ``$BRODEN_MIRROR``; ``mirror=""`` forces the original URL.
    ``require_checksum`` refuses resources without a sha256; ``warn_unverified=False``
    silences the warning logged when a file without a recorded sha256 is accepted.
    """
    dest = res.path_in(dest_dir)
    url = mirror_url(res.url, mirror_from_env(mirror))
    if require_checksum and res.sha256 is None:
        raise DownloadError(f"{res.filename}: no sha256 is recorded for {res.url}; "
                            "run `broden checksums --register SOURCE` after a trusted download")
    if dest.exists():
        try:
            verify_file(dest, res, url, delete=False)
            return dest
        except ChecksumError as e:
            if offline:
                raise
            log.warning("%s; downloading it again", e)
            dest.unlink()
    if offline:
        raise OfflineError("offline mode: a file is missing\n" + offline_instructions([res], dest_dir, mirror=mirror))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _download_with_retries(url, part, res, timeout, progress, retries, backoff, max_backoff)
    except _Unresolved as e:
        raise OfflineError(f"{e}: this machine seems to have no network (no retries). Fetch the file "
                           f"elsewhere, or use --mirror / $BRODEN_MIRROR, or --offline.\n"
                           + offline_instructions([res], dest_dir, mirror=mirror)) from None
    if not part.exists():
        part.touch()  # zero-byte file
    verify_file(part, res, url)
    if res.sha256 is None and warn_unverified:
        log.warning("%s: no sha256 recorded for %s; it was not verified (see `broden checksums --register`)",
                    res.filename, res.url)
    os.replace(part, dest)
    return dest


@dataclass
class FetchReport:
    """Outcome of :func:`fetch_many`: paths of the files fetched, and (resource, error) of the failures."""

    ok: List[Path] = field(default_factory=list)
    failed: List[Tuple[Resource, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.ok)} file(s) fetched, {len(self.failed)} failed"]
        lines += [f"  {r.filename} ({r.url}): {err}" for r, err in self.failed]
        return "\n".join(lines)


def _check_many(resources: Sequence[Resource], workers: int) -> None:
    """fetch_many's arguments: at least one worker, distinct file names (ValueError otherwise)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    seen = set()
    for r in resources:
        if r.filename in seen:
            raise ValueError(f"fetch_many: filename {r.filename!r} appears twice")
        seen.add(r.filename)


def fetch_many(
    resources: Sequence[Resource],
    dest_dir: Union[str, Path],
    *,
    workers: int = 8,
    progress: bool = True,
    on_done: Optional[Callable[[Resource, Optional[Path], Optional[str]], None]] = None,
    **fetch_kwargs,
) -> FetchReport:
    """Fetch many (small) files with at most ``workers`` concurrent transfers.

    Failures do not stop the others; they are logged and listed in the report
    (``report.ok`` keeps the input order). ``fetch_kwargs`` go to :func:`fetch`
    (per-file progress bars are off; one bar counts files). Filenames must be distinct.
    Files without a sha256 are accepted (size checked when known) with one summary warning.
    """
    _check_many(resources, workers)
    unverified = sum(r.sha256 is None for r in resources)
    if unverified:
        log.warning("%d of %d file(s) have no recorded sha256; they are checked for completeness only",
                    unverified, len(resources))
    fetch_kwargs["progress"] = False
    fetch_kwargs.setdefault("warn_unverified", False)
    results: List[Optional[Path]] = [None] * len(resources)
    report = FetchReport()
    bar = None
    if progress:
        from ..progress import progress as make_bar

        bar = make_bar(total=len(resources), desc="files", unit="file", leave=False)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futs = {pool.submit(fetch, r, dest_dir, **fetch_kwargs): i for i, r in enumerate(resources)}
            for fut in as_completed(futs):
                i = futs[fut]
                res = resources[i]
                try:
                    results[i] = fut.result()
                    err = None
                except OfflineError:  # the host does not resolve: every other file would fail the same way
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                except (DownloadError, OSError) as e:
                    err = str(e)
                    report.failed.append((res, err))
                    log.warning("failed to fetch %s: %s", res.url, err)
                if on_done is not None:
                    on_done(res, results[i], err)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    report.ok = [p for p in results if p is not None]
    order = {r.filename: i for i, r in enumerate(resources)}
    report.failed.sort(key=lambda t: order[t[0].filename])
    return report


def offline_instructions(resources: Sequence[Resource], dest_dir: Union[str, Path], *,
                         mirror: Optional[str] = None, source: str = "") -> str:
    """A block of text, one entry per resource: url, filename, destination path, size and sha256.

    Sizes and checksums not yet known are shown as ``unknown``. Verification commands use
    ``sha256sum``.
    """
    lines = []
    head = f"source {source}: " if source else ""
    lines.append(f"{head}put {'this file' if len(resources) == 1 else f'these {len(resources)} files'} "
                 f"into place (then run again):")
    m = mirror_from_env(mirror)
    for r in resources:
        dest = r.path_in(Path(dest_dir).expanduser().resolve())
        lines.append(f"  url:         {r.url}")
        if m:
            lines.append(f"  mirror url:  {mirror_url(r.url, m)}")
        lines.append(f"  filename:    {r.filename}")
        lines.append(f"  destination: {dest}")
        lines.append(f"  size:        {r.size if r.size is not None else 'unknown'}" + (" bytes" if r.size is not None else ""))
        lines.append(f"  sha256:      {r.sha256 or 'unknown'}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
