"""A Broden store as WebDataset tar shards, for clusters and object storage.

``broden export STORE --webdataset DIR --shard-size N`` writes ``DIR/shard-000000.tar`` ... with the
``webdataset`` package's TarWriter: one sample per index.csv row, in row order, ``N`` rows a shard.
A sample's key is its 0-based row number (8 digits); its members are ``<key>.jpg`` (the image's
bytes), ``<key>.f<j>.png`` (the row's label PNGs, byte for byte, numbered in index.csv's category
order then layer order) and ``<key>.json`` (the row's index.csv cells). Beside the shards, ``DIR``
holds the store's tables (index.csv, label.csv, category.csv, c_*.csv, build.json, README.txt) and
``shards.json``: per shard its name, first row, row count, size and sha256, plus the store's
fingerprint. Any WebDataset reader streams the shards; ``tests/test_shards.py`` checks it.

``BrodenStore('DIR/shard-{000000..000099}.tar')`` (and so ``dissect run|score --store`` with that
pattern) reads them as a :class:`ShardStore`: the tables from DIR, every listed shard checked
against shards.json (all of them, sizes and sha256, once, when the store is opened), and each
image or label PNG read from its shard at the offset of its tar member, so the two passes read
rows by position exactly as from the folder store and the results are identical (same bytes in,
same fingerprint). Ranks take contiguous rows, so each rank reads a contiguous run of shards.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO, Optional, Union

from .errors import StoreFormatError
from ..userfiles import file_sha256

SHARDS_JSON = "shards.json"
FORMAT = "broden-webdataset/1"
TABLES = ("index.csv", "label.csv", "category.csv", "build.json", "README.txt")


def _need_webdataset():
    try:
        import webdataset  # noqa: F401
    except ImportError:
        from ..errors import BrodenError

        raise BrodenError("sharded stores need the webdataset package: pip install 'broden-dissect[shards]'") from None


def is_shard_spec(path: Union[str, Path]) -> bool:
    """True for a shard list: a path ending in ``.tar`` (optionally with ``{a..b}`` braces)."""
    return str(path).endswith(".tar")


def _row_files(store, row: int) -> list:
    """The label PNGs of ``row`` in member order (index.csv's category order, then layer order)."""
    cells = store.rows[row].cells
    return [p for c in store.categories if c not in store.image_level_categories for p in cells.get(c, ())]


def _write_shard(store, path: Path, rows: range) -> dict:
    """Rows ``rows`` of ``store`` as one WebDataset tar at ``path``: per row its index.csv fields
    (json), the image (jpg) and every label plane (f<j>.png); returns its shards.json entry."""
    import webdataset as wds

    with wds.TarWriter(str(path), encoder=False) as sink:
        for row in rows:
            sample = {
                "__key__": f"{row:08d}",
                "json": json.dumps(
                    {
                        "image": store.rows[row].image,
                        "cells": {c: list(v) for c, v in store.rows[row].cells.items()},
                    },
                    sort_keys=True,
                ).encode(),
            }
            with store.open_member(store.rows[row].image, row) as f:
                sample["jpg"] = f.read()
            for j, rel in enumerate(_row_files(store, row)):
                with store.open_member(rel, row) as f:
                    sample[f"f{j}.png"] = f.read()
            sink.write(sample)
    return {
        "name": path.name,
        "first": rows.start,
        "count": len(rows),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def export_webdataset(store, out: Union[str, Path], shard_size: int = 1000, progress=None) -> dict:
    """Write ``store`` (a BrodenStore) as shards under ``out`` (a new or empty folder); returns shards.json.

    The whole export is written into ``out/.partial`` and moved into place at the end, so an
    interrupted export leaves no shard set that looks complete. Raises ValueError for a bad
    ``shard_size``, StoreFormatError for an unreadable store file, OSError from the filesystem.
    """
    _need_webdataset()
    from .atomic import atomic_write_text

    if not 1 <= int(shard_size) <= 1_000_000:
        raise ValueError(f"--shard-size must be between 1 and 1,000,000 rows, got {shard_size}")
    out = Path(out)
    if out.exists() and any(p.name not in (".partial", ".lock", ".lock.holder") for p in out.iterdir()):
        raise ValueError(f"{out}: not empty; export into a new folder")
    stage = out / ".partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    shards = []
    n = len(store.rows)
    for s, first in enumerate(range(0, n, shard_size)):
        shards.append(_write_shard(store, stage / f"shard-{s:06d}.tar", range(first, min(n, first + shard_size))))
        if progress:
            progress(len(shards))
    for t in TABLES:
        if (store.root / t).exists():
            shutil.copyfile(store.root / t, stage / t)
    for c in store.categories:
        shutil.copyfile(store.root / f"c_{c}.csv", stage / f"c_{c}.csv")
    doc = {
        "format": FORMAT,
        "rows": n,
        "shard_size": int(shard_size),
        "store_fingerprint": store.fingerprint(),
        "shards": shards,
    }
    atomic_write_text(stage / SHARDS_JSON, json.dumps(doc, indent=1) + "\n")
    for p in sorted(stage.iterdir(), key=lambda p: p.name == SHARDS_JSON):  # shards.json last: the commit
        os.replace(p, out / p.name)
    stage.rmdir()
    return doc


def expand(spec: str) -> list:
    """The shard paths of ``spec`` (``{000000..000099}`` braces expanded, as WebDataset does)."""
    _need_webdataset()
    from braceexpand import braceexpand  # a dependency of webdataset: its own shard-list syntax

    return [Path(p) for p in braceexpand(spec)]


def shard_folder(spec: Union[str, Path]) -> Path:
    """The folder holding the shards of ``spec`` (and their tables)."""
    paths = expand(str(spec))
    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise StoreFormatError(Path(str(spec)), "the shards of one store must lie in one folder")
    return folders.pop()


def verify(spec: str, folder: Path) -> dict:
    """shards.json of ``folder``, checked against the shard files ``spec`` names: the same set, each
    file's size and sha256 as recorded. Raises StoreFormatError naming the first shard that differs."""
    meta = folder / SHARDS_JSON
    try:
        doc = json.loads(meta.read_text("utf-8"))
    except FileNotFoundError:
        raise StoreFormatError(meta, "missing: not a shard set written by `broden export`") from None
    except (OSError, ValueError) as e:
        raise StoreFormatError(meta, f"unreadable ({e})") from None
    if doc.get("format") != FORMAT:
        raise StoreFormatError(meta, f"format {doc.get('format')!r}, expected {FORMAT!r}")
    listed = {p.name for p in expand(spec)}
    recorded = [s["name"] for s in doc["shards"]]
    missing = [n for n in recorded if n not in listed]
    extra = sorted(listed - set(recorded))
    if missing or extra:
        raise StoreFormatError(
            Path(spec),
            (
                f"does not name {len(missing)} shard(s) of the store (first: {missing[0]})"
                if missing
                else f"names shard(s) shards.json lacks: {extra[:3]}"
            ),
        )
    for s in doc["shards"]:
        p = folder / s["name"]
        try:
            size = p.stat().st_size
        except OSError as e:
            raise StoreFormatError(p, f"cannot read ({e.strerror or e})") from None
        if size != s["bytes"] or file_sha256(p) != s["sha256"]:
            raise StoreFormatError(p, "content differs from its sha256 in shards.json (damaged or replaced)")
    return doc


class ShardIndex:
    """Row -> shard, and per shard its members' (offset, size), read from the tar headers on first use."""

    def __init__(self, folder: Path, doc: dict):
        self.folder = folder
        self.shards = doc["shards"]
        self.firsts = [s["first"] for s in self.shards]
        self._members: dict = {}

    def shard_of(self, row: int) -> dict:
        return self.shards[bisect.bisect_right(self.firsts, row) - 1]

    def members(self, shard: dict) -> dict:
        got = self._members.get(shard["name"])
        if got is None:
            with tarfile.open(self.folder / shard["name"]) as tar:
                got = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
            self._members[shard["name"]] = got
        return got

    def read(self, row: int, ext: str) -> tuple[Path, bytes]:
        shard = self.shard_of(row)
        path = self.folder / shard["name"]
        where = self.members(shard).get(f"{row:08d}.{ext}")
        if where is None:
            raise StoreFormatError(path, f"has no member {row:08d}.{ext} (index.csv row {row + 1})")
        with open(path, "rb") as f:
            f.seek(where[0])
            return path, f.read(where[1])


def open_shard_member(store, index: ShardIndex, relpath: str, row: Optional[int]) -> BinaryIO:
    """The bytes of ``relpath`` (the row's image or one of its label PNGs) as a file object."""
    if row is None:
        raise StoreFormatError(store.root, f"{relpath}: a sharded store reads files by row only")
    if relpath == store.rows[row].image:
        ext = "jpg"
    else:
        files = _row_files(store, row)
        if relpath not in files:
            raise StoreFormatError(store.root / "index.csv", f"{relpath!r} is not a file of this row", row + 1)
        ext = f"f{files.index(relpath)}.png"
    _, data = index.read(row, ext)
    return io.BytesIO(data)
