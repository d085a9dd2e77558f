"""``DownloadableSource``: a mixin giving a Source its resources, fetch and extraction.

Folder convention (like TFDS): ``broden_builder/sources/<name>/`` holds the builder
module, ``checksums.tsv`` (see :mod:`broden_builder.download.registry`), ``LICENSE.md`` (terms)
and ``CITATION.bib``. A source class mixes this in before :class:`~broden_builder.sources.base.Source`::

    @register_source("pascal")
    class PascalSource(DownloadableSource, Source):
        checksums_file = "checksums.tsv"      # next to this module (the default)

        def check(self): ...                   # raises SourceMissingError when files are absent

Where things go, for a recipe entry ``{type: NAME, path: DIR, ...}``:

* downloads: the entry's ``downloads`` folder if given, else ``$BRODEN_DOWNLOAD_DIR/<prefix>``,
  else ``DIR/.downloads``. Archives are kept there (a later extraction reuses them).
* extraction: archives (.tar, .tar.gz, .tgz, .zip) are extracted into
  :meth:`extract_target` (``DIR`` by default), side by side; other files are copied there
  under their ``filename``.
* ``download: false`` in the entry stops the build from downloading that source.
"""
from __future__ import annotations

import inspect
import logging
import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

from ..download.extract import extract_archive
from ..download.registry import Resource, archive_kind, load_checksums
from ..download.transfer import OfflineError, fetch, mirror_from_env, offline_instructions, verify_file
from ..errors import SourceMissingError

log = logging.getLogger(__name__)

DOWNLOAD_DIR_ENV = "BRODEN_DOWNLOAD_DIR"


class DownloadableSource:
    """Mixin for sources whose files can be downloaded (see the module docstring)."""

    #: checksums file, relative to the folder of the module that defines the class.
    checksums_file: str = "checksums.tsv"

    @classmethod
    def checksums_path(cls) -> Path:
        """The class's checksums.tsv (next to the module defining the class, unless absolute)."""
        p = Path(cls.checksums_file)
        if p.is_absolute():
            return p
        for klass in cls.__mro__:  # the most derived class that sets checksums_file decides the folder
            if "checksums_file" in vars(klass) and klass is not DownloadableSource:
                return Path(inspect.getfile(klass)).resolve().parent / p
        return Path(inspect.getfile(cls)).resolve().parent / p

    def resources(self) -> List[Resource]:
        """The files this source needs (default: every row of :meth:`checksums_path`). Override to filter."""
        return load_checksums(self.checksums_path())

    # ------------------------------------------------------------------ places
    def source_path(self) -> Path:
        """The recipe entry's ``path`` (raises SourceMissingError when absent)."""
        cfg = getattr(self, "config", {})
        if not cfg.get("path"):
            raise SourceMissingError(f"{cfg.get('type', type(self).__name__)}: the recipe entry has no `path`")
        return Path(cfg["path"]).expanduser()

    def download_dir(self) -> Path:
        """Where downloaded files are kept (see the module docstring)."""
        cfg = getattr(self, "config", {})
        if cfg.get("downloads"):
            return Path(cfg["downloads"]).expanduser()
        env = os.environ.get(DOWNLOAD_DIR_ENV)
        if env:
            return Path(env).expanduser() / (getattr(self, "prefix", "") or cfg.get("type", "source"))
        return self.source_path() / ".downloads"

    def extract_target(self, resource: Resource) -> Path:
        """Folder into which ``resource`` is extracted or copied (default: :meth:`source_path`)."""
        return self.source_path()

    def download_allowed(self) -> bool:
        """False when the recipe entry says ``download: false``."""
        return bool(getattr(self, "config", {}).get("download", True))

    def is_present(self) -> bool:
        """True when ``check()`` passes."""
        try:
            self.check()  # type: ignore[attr-defined]
            return True
        except SourceMissingError:
            return False

    # ------------------------------------------------------------------ work
    def fetch_all(self, dest_dir: Optional[Path] = None, *, mirror: Optional[str] = None, offline: bool = False,
                  progress: bool = True, resources: Optional[Sequence[Resource]] = None, **fetch_kwargs) -> List[Path]:
        """Download (or verify already present) every resource into ``dest_dir`` (default :meth:`download_dir`).

        Offline, all missing files are reported together in one OfflineError.
        """
        dest_dir = Path(dest_dir) if dest_dir is not None else self.download_dir()
        resources = list(resources) if resources is not None else self.resources()
        if offline:
            missing = []
            for r in resources:
                p = r.path_in(dest_dir)
                if not p.exists():
                    missing.append(r)
                    continue
                verify_file(p, r, delete=False)
            if missing:
                name = getattr(self, "key", "") or type(self).__name__
                raise OfflineError(offline_instructions(missing, dest_dir, mirror=mirror, source=name))
        mirror = mirror_from_env(mirror) or ""
        return [fetch(r, dest_dir, mirror=mirror, offline=offline, progress=progress, **fetch_kwargs) for r in resources]

    def extract_all(self, files: Optional[Sequence[Path]] = None, *, progress: bool = True,
                    resources: Optional[Sequence[Resource]] = None, force: bool = False,
                    limits=None) -> List[Path]:
        """Extract archives / copy plain files into :meth:`extract_target`; returns the targets.

        ``files`` defaults to the resources' paths in :meth:`download_dir` (all must exist).
        An archive without a registered sha256 is unverified: it is extracted within
        ``limits`` (default ExtractLimits()); a verified one is not bounded.
        """
        from ..download.extract import ExtractLimits

        limits = limits if limits is not None else ExtractLimits()
        resources = list(resources) if resources is not None else self.resources()
        if files is None:
            files = [r.path_in(self.download_dir()) for r in resources]
        if len(files) != len(resources):
            raise ValueError(f"extract_all: {len(files)} file(s) for {len(resources)} resource(s)")
        out = []
        for r, f in zip(resources, files):
            f = Path(f)
            target = self.extract_target(r)
            if archive_kind(r.filename):
                extract_archive(f, target, progress=progress, force=force, name=r.filename,
                                limits=None if r.sha256 else limits)
            else:
                dest = r.path_in(target)
                if dest.resolve() != f.resolve():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dest.with_name(f".{dest.name}.tmp")
                    shutil.copyfile(f, tmp)
                    os.replace(tmp, dest)
            out.append(target)
        return out
