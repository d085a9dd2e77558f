"""Read a Broden-format store: the original broden1_* archives and the stores this toolkit writes.

Example::

    from broden_builder import BrodenStore
    store = BrodenStore("broden1_224")
    row = store.rows[0]
    rgb = store.load_image(0)                 # H x W x 3 uint8
    layers = store.pixel_layers(0, "object")  # list of H x W int32 global label numbers
    scenes = store.image_labels(0, "scene")   # list of global label numbers (0 dropped)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .commit import pending_commit, pending_message
from .errors import StoreFormatError
from .paths import Confinement, UnsafePathError, check_relpath, safe_category
from .format import (
    SPLITS,
    load_whole,
    CATEGORY_COLUMNS,
    CATEGORY_MAP_COLUMNS,
    DEFAULT_IMAGE_LEVEL,
    INDEX_FIXED_COLUMNS,
    LABEL_COLUMNS,
    parse_category_cell,
    read_label_png,
    split_cell,
)


@dataclass(frozen=True)
class Label:
    """One row of label.csv."""

    number: int
    name: str
    categories: dict  # category -> image count, most images first
    frequency: int
    coverage: float
    syns: tuple = ()


@dataclass(frozen=True)
class CategoryInfo:
    """One row of category.csv."""

    name: str
    first: int
    last: int
    count: int
    frequency: int


@dataclass(frozen=True)
class CategoryLabel:
    """One row of c_<category>.csv."""

    code: int
    number: int
    name: str
    frequency: int
    coverage: float


class IndexRow:
    """One row of index.csv. ``cells`` maps category -> tuple of raw ';'-split items."""

    __slots__ = ("index", "image", "split", "ih", "iw", "sh", "sw", "cells")

    def __init__(self, index, image, split, ih, iw, sh, sw, cells):
        self.index = index
        self.image = image
        self.split = split
        self.ih, self.iw, self.sh, self.sw = ih, iw, sh, sw
        self.cells = cells

    def __repr__(self) -> str:
        return f"IndexRow({self.index}, {self.image!r}, {self.split!r})"


def read_csv_file(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read a CSV (CRLF or LF, optional UTF-8 BOM); return (header, rows). Raises StoreFormatError."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise StoreFormatError(path, "file is missing") from None
    except UnicodeDecodeError as e:
        raise StoreFormatError(path, f"not UTF-8 text ({e})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise StoreFormatError(path, f"malformed CSV ({e})") from None
    if not rows:
        raise StoreFormatError(path, "empty file (no header)")
    header = [h.strip() for h in rows[0]]
    return header, [r for r in rows[1:] if r and any(c.strip() for c in r)]


def _int(path: Path, row: int, column: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise StoreFormatError(path, f"column {column!r}: {value!r} is not an integer", row) from None


def _float(path: Path, row: int, column: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise StoreFormatError(path, f"column {column!r}: {value!r} is not a number", row) from None


def _require_columns(path: Path, header: Sequence[str], required: Sequence[str], optional: Sequence[str] = ()) -> None:
    missing = [c for c in required if c not in header and c not in optional]
    if missing:
        raise StoreFormatError(path, f"malformed header {header}: missing column(s) {missing}", 0)


def _build_json_shape_problem(info) -> Optional[str]:
    """Why ``info`` (parsed build.json) does not have the shape that readers rely on; None when it does.

    build.json is read from the store, so a malformed one must be a named error, never an
    AttributeError deep in a reader. Checked: an object; ``recipe`` an object;
    ``image_level_categories`` a list of names; ``written_statistics`` an object
    ``{number: {category: [images, coverage]}}``; ``additions`` a list.
    """
    if not isinstance(info, dict):
        return f"must be a JSON object, got {type(info).__name__}"
    kinds = {"recipe": dict, "image_level_categories": list, "written_statistics": dict, "additions": list}
    for key, kind in kinds.items():
        if key in info and not isinstance(info[key], kind):
            return f"{key!r} must be a JSON {'object' if kind is dict else 'list'}, got {type(info[key]).__name__}"
    if not all(isinstance(c, str) for c in info.get("image_level_categories", [])):
        return "'image_level_categories' must list category names"
    for num, cats in info.get("written_statistics", {}).items():
        ok = (
            str(num).isdigit()
            and isinstance(cats, dict)
            and all(
                isinstance(v, list)
                and len(v) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                for v in cats.values()
            )
        )
        if not ok:
            return (
                f"'written_statistics' entry {num!r} must be {{category: [images, coverage]}} "
                f"keyed by a label number, got {cats!r}"
            )
    return None


class BrodenStore:
    """A Broden store on disk (the format: docs/format.md). Opening reads only the CSV tables;
    images and PNGs load on demand. Raises StoreFormatError (naming the file and row) for a folder
    that is not a store, a store between two versions, or a malformed table.

    Attributes (read from the tables when opened):

    - ``root``: Path of the store folder.
    - ``build_info``: dict, build.json's content ({} for an original store without one).
    - ``labels``: list[Label], label.csv's rows in number order (``number``, ``name``,
      ``categories`` {category: images}, ``frequency``, ``coverage``, ``syns``).
    - ``label_by_number``: dict[int, Label]; ``label_by_name``: dict[str, Label].
    - ``category_info``: dict[str, CategoryInfo], category.csv's rows.
    - ``categories``: list[str], the category columns of index.csv, in file order.
    - ``rows``: list[IndexRow], index.csv's rows (``index``, ``image``, ``split``, image size
      ``ih`` x ``iw``, segmentation size ``sh`` x ``sw``, ``cells`` {category: [items]}).
    - ``category_maps``: dict[str, list[CategoryLabel]], each c_<category>.csv.
    - ``image_level_categories``: frozenset[str], categories labelled per image (scene, texture).

    ``len(store)`` is the number of images; iterating yields the IndexRows.
    """

    def __new__(cls, root: Union[str, Path] = "", *args, **kwargs):
        if cls is BrodenStore and str(root).endswith(".tar"):  # a shard list: store/shards.py
            return super().__new__(ShardStore)
        return super().__new__(cls)

    #: True only for ``broden validate``'s reading, which reports longer rows and unknown splits with
    #: every other problem instead of stopping at the first (docs/format.md, index.csv).
    _lenient_rows = False

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreFormatError(self.root, "store directory does not exist")
        marker = pending_commit(self.root)
        if marker is not None:  # between two versions: refuse rather than read a mix (store/commit.py)
            raise StoreFormatError(marker, pending_message(self.root))
        if (self.root / "shards.json").is_file() and not isinstance(self, ShardStore):
            raise StoreFormatError(self.root, _shard_folder_message(self.root))
        if not any((self.root / n).exists() for n in ("index.csv", "label.csv")):
            raise StoreFormatError(
                self.root,
                "not a Broden store (no index.csv or label.csv)"
                + ("; a build there is unfinished" if (self.root / ".build").exists() else ""),
            )
        self.build_info: dict = self._read_build_json()
        self.labels: list[Label] = self._read_labels()
        self.label_by_number: dict[int, Label] = {l.number: l for l in self.labels}
        self.label_by_name: dict[str, Label] = {l.name: l for l in self.labels}
        self.category_info: dict[str, CategoryInfo] = self._read_categories()
        self.categories: list[str] = []
        self.rows: list[IndexRow] = self._read_index()
        self.category_maps: dict[str, list[CategoryLabel]] = {c: self._read_category_map(c) for c in self.categories}
        self.image_level_categories: frozenset = self._infer_image_level()

    # ------------------------------------------------------------------ tables
    def _read_build_json(self) -> dict:
        path = self.root / "build.json"
        if not path.exists():
            return {}
        try:
            info = json.loads(path.read_text("utf-8"))
        except ValueError as e:
            raise StoreFormatError(path, f"not valid JSON ({e})") from None
        why = _build_json_shape_problem(info)
        if why:
            raise StoreFormatError(path, why)
        return info

    def _read_labels(self) -> list[Label]:
        path = self.root / "label.csv"
        header, rows = read_csv_file(path)
        _require_columns(path, header, LABEL_COLUMNS, optional=("syns",))
        col = {name: i for i, name in enumerate(header)}
        out = []
        for r, row in enumerate(rows, start=1):
            get = lambda c: row[col[c]].strip() if c in col and col[c] < len(row) else ""
            number = _int(path, r, "number", get("number"))
            if number < 1:
                raise StoreFormatError(path, f"label number {number} must be >= 1 (0 means unlabeled)", r)
            try:
                cats = parse_category_cell(get("category"))
            except ValueError as e:
                raise StoreFormatError(path, f"column 'category': {e}", r) from None
            out.append(
                Label(
                    number=number,
                    name=get("name"),
                    categories=cats,
                    frequency=_int(path, r, "frequency", get("frequency")),
                    coverage=_float(path, r, "coverage", get("coverage")),
                    syns=tuple(split_cell(get("syns"))),
                )
            )
        return out

    def _read_categories(self) -> dict[str, CategoryInfo]:
        path = self.root / "category.csv"
        if not path.exists():
            return {}
        header, rows = read_csv_file(path)
        _require_columns(path, header, CATEGORY_COLUMNS)
        col = {name: i for i, name in enumerate(header)}
        out = {}
        for r, row in enumerate(rows, start=1):
            get = lambda c: row[col[c]].strip() if col[c] < len(row) else ""
            info = CategoryInfo(
                name=get("name"),
                first=_int(path, r, "first", get("first")),
                last=_int(path, r, "last", get("last")),
                count=_int(path, r, "count", get("count")),
                frequency=_int(path, r, "frequency", get("frequency")),
            )
            out[info.name] = info
        return out

    def _read_category_map(self, category: str) -> list[CategoryLabel]:
        path = self.root / f"c_{category}.csv"
        if not path.exists():
            return []
        header, rows = read_csv_file(path)
        _require_columns(path, header, CATEGORY_MAP_COLUMNS)
        col = {name: i for i, name in enumerate(header)}
        out = []
        for r, row in enumerate(rows, start=1):
            get = lambda c: row[col[c]].strip() if col[c] < len(row) else ""
            out.append(
                CategoryLabel(
                    code=_int(path, r, "code", get("code")),
                    number=_int(path, r, "number", get("number")),
                    name=get("name"),
                    frequency=_int(path, r, "frequency", get("frequency")),
                    coverage=_float(path, r, "coverage", get("coverage")),
                )
            )
        return out

    def _read_index(self) -> list[IndexRow]:
        path = self.root / "index.csv"
        if path.exists() and not path.is_file():
            raise StoreFormatError(path, "is not a file")
        header, rows = read_csv_file(path)
        if list(header[: len(INDEX_FIXED_COLUMNS)]) != list(INDEX_FIXED_COLUMNS):
            raise StoreFormatError(
                path, f"malformed header {header}: must start with {','.join(INDEX_FIXED_COLUMNS)}", 0
            )
        cats = [h for h in header[len(INDEX_FIXED_COLUMNS) :] if h]
        for c in cats:  # each names c_<category>.csv, read next: one safe name, so the file is in the store
            try:
                safe_category(c, "category column")
            except UnsafePathError as e:
                raise StoreFormatError(path, str(e), 0) from None
        self.categories = cats
        ncat = len(cats)
        base = len(INDEX_FIXED_COLUMNS)
        out = []
        for r, row in enumerate(rows, start=1):
            if len(row) < base:
                raise StoreFormatError(path, f"row has {len(row)} columns, expected at least {base}", r)
            if not self._lenient_rows:  # `broden validate` reads on to list every problem (store/validate.py)
                if len(row) > len(header):
                    raise StoreFormatError(
                        path, f"row has {len(row)} cells, the header {len(header)} (a longer row hides data)", r
                    )
                if row[1] not in SPLITS:
                    raise StoreFormatError(path, f"split {row[1]!r} is not one of {', '.join(SPLITS)}", r)
            try:
                ih, iw, sh, sw = int(row[2]), int(row[3]), int(row[4]), int(row[5])
            except ValueError:
                raise StoreFormatError(path, f"sizes {row[2:6]} are not integers", r) from None
            why = check_relpath(row[0])
            if why is not None:  # every path of a store stays under STORE/images, never outside it
                raise StoreFormatError(path, f"image {row[0]!r} leaves {self.root / 'images'}: {why}", r)
            cells = {}
            for j in range(ncat):
                k = base + j
                v = row[k] if k < len(row) else ""
                cells[cats[j]] = items = tuple(x for x in v.split(";") if x) if v else ()
                for it in items:
                    why = check_relpath(it)
                    if why is not None:
                        raise StoreFormatError(
                            path, f"column {cats[j]!r}: {it!r} leaves {self.root / 'images'}: {why}", r
                        )
            out.append(IndexRow(r - 1, row[0], row[1], ih, iw, sh, sw, cells))
        return out

    def _infer_image_level(self) -> frozenset:
        recorded = self.build_info.get("image_level_categories")
        if recorded is not None:
            return frozenset(recorded)
        out = set()
        for cat in self.categories:
            kind = None
            for row in self.rows:
                items = row.cells[cat]
                if items:
                    kind = "pixel" if items[0].lower().endswith(".png") else "image"
                    break
            if kind == "image" or (kind is None and cat in DEFAULT_IMAGE_LEVEL):
                out.add(cat)
        return frozenset(out)

    # ------------------------------------------------------------------ access
    def _repr_html_(self) -> str:
        """A summary for notebooks: path, images per split, labels per category."""
        from collections import Counter
        from html import escape

        splits = Counter(r.split for r in self.rows)
        per_cat = Counter(c for lab in self.labels for c in lab.categories)
        cats = "".join(
            f"<tr><td>{escape(c)}</td><td>{'image' if c in self.image_level_categories else 'pixel'}</td>"
            f"<td>{per_cat.get(c, 0)}</td></tr>"
            for c in self.categories
        )
        split_text = ", ".join(f"{escape(str(s))} {n}" for s, n in sorted(splits.items()))
        return (
            f"<div><p><b>BrodenStore</b> <code>{escape(str(self.root))}</code>: {len(self)} images"
            f"{' (' + split_text + ')' if split_text else ''}, {len(self.labels)} labels</p>"
            "<table><thead><tr><th>category</th><th>level</th><th>labels</th></tr></thead>"
            f"<tbody>{cats}</tbody></table></div>"
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[IndexRow]:
        return iter(self.rows)

    @property
    def pixel_categories(self) -> list[str]:
        """The categories labelled per pixel (``categories`` less the image-level ones), in file order."""
        return [c for c in self.categories if c not in self.image_level_categories]

    def resolve(self, relpath: str, row: Optional[int] = None) -> Path:
        """``STORE/images/relpath``, checked to stay under STORE/images (also through symlinks).

        Raises StoreFormatError naming index.csv and the row (0-based ``row``) otherwise.
        """
        try:
            confine = self.__dict__.get("_confine")
            if confine is None:  # one per store: folders are resolved once (store/paths.Confinement)
                confine = self._confine = Confinement(self.root / "images")
            return confine(relpath, "store path")
        except UnsafePathError as e:
            raise StoreFormatError(self.root / "index.csv", str(e), None if row is None else row + 1) from None

    def image_path(self, i: int) -> Path:
        """Path of row ``i``'s image (0-based row); StoreFormatError if it leaves STORE/images."""
        return self.resolve(self.rows[i].image, i)

    def member_path(self, relpath: str, row: Optional[int] = None) -> Path:
        """Where ``relpath`` is read from, as messages name it (for a folder store: :meth:`resolve`)."""
        return self.resolve(relpath, row)

    def open_member(self, relpath: str, row: Optional[int] = None) -> BinaryIO:
        """A binary file object of ``STORE/images/relpath`` (confined as :meth:`resolve`); the one way
        images and label PNGs are read, so a sharded store (store/shards.py) serves them from its tars."""
        return open(self.resolve(relpath, row), "rb")

    def member_stat(self, relpath: str, row: Optional[int] = None) -> tuple:
        """(size, mtime_ns) of the file behind ``relpath``: what tells a cached decode it is still current."""
        # relpath passed check_relpath when index.csv was read; a stat reads no content, so the
        # symlink confinement of resolve() (43 us a call, the cache's largest cost) is not needed here
        st = os.stat(self.root / "images" / relpath)
        return st.st_size, st.st_mtime_ns

    def load_image(self, i: int) -> np.ndarray:
        """The image of row ``i`` (0-based) as uint8 RGB [ih, iw, 3]; StoreFormatError when unreadable."""
        path = self.image_path(i)
        try:
            with self.open_member(self.rows[i].image, i) as f, Image.open(f) as im:
                load_whole(im)
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise StoreFormatError(path, f"cannot read image of index.csv row {i + 1} ({e})") from None

    def load_label_png(self, relpath: str, row: Optional[int] = None) -> np.ndarray:
        """Decode one segmentation PNG (path relative to images/) into int32 [sh, sw] global label
        numbers (0 = unlabeled).

        Uses the format's one decoder (format.read_label_png); with ``row`` (0-based) the
        PNG's size is checked against the row's sh x sw before it is decoded.
        """
        path = self.member_path(relpath, row)
        shape = None if row is None else (self.rows[row].sh, self.rows[row].sw)
        try:
            with self.open_member(relpath, row) as f:
                return read_label_png(f, shape)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise StoreFormatError(
                path, f"cannot read segmentation{'' if row is None else f' of index.csv row {row + 1}'} ({e})"
            ) from None

    def pixel_layers(self, i: int, category: str) -> list[np.ndarray]:
        """The pixel layers of ``category`` for row ``i``: list of int32 [sh, sw] label numbers (0 =
        unlabeled), one per layer (ADE20K parts have several). ValueError for an image-level category."""
        if category in self.image_level_categories:
            raise ValueError(f"category {category!r} is image-level; use image_labels()")
        return [self.load_label_png(p, i) for p in self.rows[i].cells[category]]

    def image_labels(self, i: int, category: str) -> list[int]:
        """The image-level label numbers of ``category`` for row ``i``: list[int], without 0 ('no label')
        and duplicates. ValueError for a pixel category; StoreFormatError for a cell that is no number."""
        if category not in self.image_level_categories:
            raise ValueError(f"category {category!r} is a pixel category; use pixel_layers()")
        out = []
        for item in self.rows[i].cells[category]:
            try:
                n = int(item)
            except ValueError:
                raise StoreFormatError(
                    self.root / "index.csv", f"column {category!r}: {item!r} is not a label number", i + 1
                ) from None
            if n != 0 and n not in out:
                out.append(n)
        return out

    def segmentation(self, i: int, categories: Optional[Sequence[str]] = None) -> dict:
        """All labels of row ``i``: {category: list of int32 [sh, sw] layers (pixel categories) or
        list[int] of label numbers (image-level)}; ``categories`` (default all) picks some."""
        out = {}
        for cat in categories or self.categories:
            out[cat] = self.image_labels(i, cat) if cat in self.image_level_categories else self.pixel_layers(i, cat)
        return out

    def label(self, key: Union[int, str]) -> Label:
        """The Label with this number (int or digit string) or name (or synonym). KeyError naming
        label.csv (with the nearest names) when there is none."""
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            n = int(key)
            if n not in self.label_by_number:
                raise KeyError(f"no label number {n} in {self.root / 'label.csv'}")
            return self.label_by_number[n]
        if key in self.label_by_name:
            return self.label_by_name[key]
        for lab in self.labels:
            if key in lab.syns:
                return lab
        from ..suggest import did_you_mean

        names = [l.name for l in self.labels] + [y for l in self.labels for y in l.syns]
        raise KeyError(f"no label named {key!r} in {self.root / 'label.csv'}{did_you_mean(key, names)}")

    def primary_category(self, number: int) -> str:
        """The category (str) where label ``number`` covers most (from c_*.csv coverage; falls back to
        its first category in label.csv, or "")."""
        best, best_cov = None, -1.0
        for cat, entries in self.category_maps.items():
            for e in entries:
                if e.number == number and e.coverage > best_cov:
                    best, best_cov = cat, e.coverage
        if best is None:
            cats = self.label_by_number[number].categories
            best = next(iter(cats)) if cats else ""
        return best

    def images_with_label(self, key: Union[int, str], split: Optional[str] = None, progress: bool = False) -> list[int]:
        """Row indices (list[int], 0-based, ascending) of the images that carry the label (name,
        synonym or number) in any category, only those of ``split`` when given.

        The first call scans every label plane once and caches the answer for all labels in the
        user's cache folder (see broden_builder.store.label_index); later calls are instant.
        Raises StoreFormatError for a ``split`` the store has no row of (a typo would answer 0).
        """
        from .label_index import label_index

        if split is not None and not any(r.split == split for r in self.rows):
            have = sorted({r.split for r in self.rows})
            raise StoreFormatError(
                self.root / "index.csv",
                f"no image of split {split!r}; the store's splits are {', '.join(have) or 'none'}",
            )
        lab = self.label(key)
        rows = label_index(self, progress).get(lab.number, ())
        return [int(i) for i in rows if split is None or self.rows[int(i)].split == split]

    def fingerprint(self) -> str:
        """sha256 hex (str) over index.csv, label.csv and category.csv: identifies the store's content tables."""
        h = hashlib.sha256()
        for name in ("index.csv", "label.csv", "category.csv"):
            p = self.root / name
            if p.exists():
                h.update(name.encode())
                h.update(p.read_bytes())
        return h.hexdigest()


def _shard_folder_message(folder: Path) -> str:
    """What to do with a folder of shards opened as a folder store: name its shard list."""
    try:
        n = len(json.loads((folder / "shards.json").read_text("utf-8"))["shards"])
        last = f"{max(n - 1, 0):06d}"
    except (OSError, ValueError, KeyError, TypeError):
        last = "NNNNNN"
    return (
        f"a shard set written by `broden export` (shards.json), not a folder store: give its shard list, "
        f"'{folder}/shard-{{000000..{last}}}.tar'"
    )


class ShardStore(BrodenStore):
    """A store exported as WebDataset shards (``DIR/shard-{000000..000099}.tar``): the tables from DIR,
    images and label PNGs from the tars, every shard checked against shards.json when opened
    (store/shards.py). Raises StoreFormatError naming a missing, extra or damaged shard."""

    def __init__(self, root: Union[str, Path]):
        from .shards import ShardIndex, shard_folder, verify

        spec = str(root)
        folder = shard_folder(spec)
        doc = verify(spec, folder)
        super().__init__(folder)
        self.spec = str(Path(spec).absolute())
        self.shard_index = ShardIndex(folder, doc)
        if len(self.rows) != doc["rows"]:
            raise StoreFormatError(folder / "index.csv", f"has {len(self.rows)} rows, shards.json {doc['rows']}")

    def resolve(self, relpath: str, row: Optional[int] = None) -> Path:
        raise StoreFormatError(
            self.root,
            f"{relpath}: a sharded store has no files to open by path; use open_member (or export a folder store)",
        )

    def member_path(self, relpath: str, row: Optional[int] = None) -> Path:
        shard = self.shard_index.shard_of(row) if row is not None else {"name": "?"}
        return self.root / shard["name"] / relpath  # for messages only: the member lives inside the tar

    def image_path(self, i: int) -> Path:
        return self.member_path(self.rows[i].image, i)

    def open_member(self, relpath: str, row: Optional[int] = None) -> BinaryIO:
        from .shards import open_shard_member

        return open_shard_member(self, self.shard_index, relpath, row)

    def member_stat(self, relpath: str, row: Optional[int] = None) -> tuple:
        st = os.stat(self.root / self.shard_index.shard_of(row)["name"])
        return st.st_size, st.st_mtime_ns
