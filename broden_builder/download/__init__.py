"""Download machinery: checksummed resources, resumable transfers, safe extraction. Nothing else.

This layer knows files and URLs, not sources: the source side (``DownloadableSource``, manual
sources) lives in :mod:`broden_builder.sources.downloadable` and :mod:`broden_builder.sources.manual`,
acquisition for the build and the CLI (``prepare_sources``, ``register_checksums``,
``DownloadOptions``) in :mod:`broden_builder.acquire`.

API (stable; used by the Pascal, DTD, ADE20K and OpenSurfaces sources)
======================================================================

Per-source folder ``broden_builder/sources/<name>/``: the builder module,
``checksums.tsv``, ``LICENSE.md`` (terms), ``CITATION.bib``.

``checksums.tsv``: tab-separated ``url  size  sha256  filename``; ``#`` comments and blank
lines ignored; a header row naming the columns is skipped; ``size``/``sha256`` may be empty
until registered. ``filename`` (relative, ``/``-separated, no ``..``) is the name on disk
under the download folder; use it to tell apart two archives with the same URL basename.

Registry (:mod:`.registry`)
    ``Resource(url, filename="", size=None, sha256=None)`` frozen; ``filename`` defaults to
    the URL's basename; ``.verified``; ``.path_in(dir)``.
    ``load_checksums(path_or_traversable) -> list[Resource]`` (ChecksumsFileError names file:line).
    ``parse_checksums(text, origin)``, ``update_checksums_file(path, resources)`` (atomic,
    keeps comments/order), ``write_checksums_file(path, resources, header)``, ``archive_kind(name)``.

Source mixin (:mod:`broden_builder.sources.downloadable`)
    ``class MySource(DownloadableSource, Source)``; class attribute ``checksums_file``
    (default ``"checksums.tsv"`` next to the class's module); ``checksums_path()``;
    ``resources()`` (override to filter, e.g. by version); ``source_path()`` (entry ``path``);
    ``download_dir()`` (entry ``downloads``, else ``$BRODEN_DOWNLOAD_DIR/<prefix>``, else
    ``path/.downloads``); ``extract_target(resource)`` (default ``path``);
    ``fetch_all(dest_dir=None, *, mirror=None, offline=False, progress=True, resources=None, **fetch_kw) -> [Path]``;
    ``extract_all(files=None, *, progress=True, resources=None, force=False) -> [Path]``
    (archives extracted side by side into the target; plain files copied there);
    ``is_present()`` (``check()`` passes); entry ``download: false`` opts out of build downloads.

Transfer (:mod:`.transfer`)
    ``fetch(resource, dest_dir, *, mirror=None, offline=False, progress=True, retries=5,
    backoff=1.0, max_backoff=60, timeout=60, require_checksum=False, warn_unverified=True) -> Path``:
    ``.part`` + HTTP Range resume, rename when complete, size+sha256 verified
    (``ChecksumError`` names url/file/expected/actual and the file is deleted), retries
    transient errors with exponential backoff, reuses a verified existing file.
    ``fetch_many(resources, dest_dir, *, workers=8, progress=True, on_done=None, **fetch_kw) -> FetchReport``
    (thread pool; ``report.ok`` paths, ``report.failed`` [(resource, error)], ``summary()``).
    Mirror rule: ``mirror + "/" + host[:port] + path`` of the original URL (query dropped);
    mirror = argument, else ``$BRODEN_MIRROR``; ``""`` disables; a local folder works too.
    ``mirror_url(url, mirror)``, ``file_digest(path) -> (size, sha256)``, ``verify_file``.
    Errors: ``DownloadError`` > ``ChecksumError``, ``OfflineError``.

Offline (:mod:`.transfer`)
    ``offline_instructions(resources, dest_dir, *, mirror=None, source="") -> str``
    (url, filename, destination, size, sha256 per file).

Extraction (:mod:`.extract`)
    ``extract_archive(archive, target, *, progress=True, force=False, name=None) -> Path`` for
    .tar/.tar.gz/.tgz/.zip: refuses members escaping ``target`` (``..``, absolute, links
    pointing out, devices) with ``UnsafeArchiveError`` naming the member; extracts into a
    temp folder, merges into ``target``, then writes ``target/.extracted/<name>.json``
    (``name`` defaults to the archive's file name; ``extract_all`` passes the resource filename);
    an interrupted extraction is redone. ``is_extracted(archive, target)``,
    ``verify_archive(archive)`` (reads every member), ``ArchiveError``.

Manual sources (:mod:`broden_builder.sources.manual`)
    ``manual_instructions(name, site_url, layout, path=None, *, notes="", archive=None) -> str``;
    ``require_manual(name, site_url, layout, path, **kw) -> Path`` raises SourceMissingError
    with those instructions when a ``layout`` path is missing under ``path``.

Build / CLI glue (:mod:`broden_builder.acquire`)
    ``DownloadOptions(enabled=True, mirror=None, offline=False, progress=True, retries=5, timeout=60)``;
    ``prepare_sources(sources, options, allow_missing=False, force=False) -> {key: status}``
    (called by ``build_store(..., download=options)`` before the sources' ``check()``);
    ``register_checksums(source_type, from_=None, dest=None, *, force=False) -> [Resource]``
    (fills rows lacking size or sha256; a sha256/size already recorded is verified, not replaced).
    CLI: ``broden build ... [--download/--no-download] [--mirror URL] [--offline]``,
    ``broden download RECIPE [--only SOURCE] [--mirror URL] [--offline]``,
    ``broden checksums SOURCE`` and ``broden checksums --register SOURCE [--from DIR_OR_URL] [--dest DIR]``.

Environment: ``BRODEN_MIRROR``, ``BRODEN_DOWNLOAD_DIR``.
"""
from .extract import (ArchiveError, ExtractLimitError, ExtractLimits, UnsafeArchiveError, extract_archive, is_extracted,
                      verify_archive)
from .registry import (ChecksumsFileError, Resource, archive_kind, load_checksums, parse_checksums,
                       update_checksums_file, write_checksums_file)
from .transfer import (MIRROR_ENV, ChecksumError, DownloadError, FetchReport, OfflineError, fetch, fetch_many,
                       file_digest, mirror_url, offline_instructions, verify_file)

__all__ = [
    "ArchiveError", "ChecksumError", "ChecksumsFileError", "DownloadError", "ExtractLimitError", "ExtractLimits",
    "FetchReport", "MIRROR_ENV",
    "OfflineError", "Resource", "UnsafeArchiveError", "archive_kind", "extract_archive", "fetch", "fetch_many",
    "file_digest", "is_extracted", "load_checksums", "mirror_url", "offline_instructions", "parse_checksums",
    "update_checksums_file", "verify_archive", "verify_file", "write_checksums_file",
]
