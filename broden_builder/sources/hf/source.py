"""The ``hf`` source: a Hugging Face ``datasets`` dataset (hub id, save_to_disk folder or parquet).

Recipe entry (pixel labels)::

    - type: hf
      dataset: path/to/saved_dataset   # save_to_disk folder, a .parquet file, a folder of
                                       # parquet files, or a hub id (needs the network)
      split: train                     # default train
      image_column: image              # default image
      mask_column: mask                # an Image or 2-D integer column
      names: [background, cat, dog]    # value -> name (list index or {value: name}); default:
                                       #   the column's ClassLabel names
      unlabeled: [0]                   # mask values meaning 'no label' (default [0])
      category: object                 # default object

Image-level labels: ``label_column: label`` instead of ``mask_column`` (a ClassLabel,
an integer with ``names``, a string, or a list of these per row), and a ``category``
(required, e.g. ``scene`` or a new one such as ``action``). Optional: ``id_column``
(store file names; default ``<split>_<row>``), ``limit``, ``rename``.

Needs the optional extra ``hf`` (``pip install 'broden-dissect[hf]'``), imported when used.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceDataError, SourceMissingError
from ..common import ValueTable, apply_rename, int_list, mask_values, split_names, store_basename, to_rgb
from .schema import HFEntry
from ..terms import folder_terms

log = logging.getLogger(__name__)


def _datasets():
    try:
        import datasets
    except ImportError:  # pragma: no cover (depends on the environment)
        raise SourceMissingError("the hf source needs the 'datasets' package: pip install 'broden-dissect[hf]'") from None
    return datasets


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or s.endswith(".parquet") or "\\" in s or s.count("/") > 1


def open_dataset(spec: str, split: str, origin: str = "", columns: Sequence[Optional[str]] = ()):
    """Open a dataset split from a local save_to_disk folder, parquet file(s), or a hub id; then
    SourceDataError naming ``origin`` when one of ``columns`` (None entries skipped) is not in it."""
    ds = _open_dataset(spec, split)
    have = set(ds.column_names)
    for col in columns:
        if col and col not in have:
            raise SourceDataError(f"{origin}: no column {col!r}; columns are {sorted(have)}")
    return ds


def _open_dataset(spec: str, split: str):
    """Open a dataset split from a local save_to_disk folder, parquet file(s), or a hub id."""
    datasets = _datasets()
    p = Path(spec).expanduser()
    if p.exists():
        if p.is_dir() and any((p / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise SourceDataError(f"{p}: no split {split!r}; it has {sorted(ds)}")
                ds = ds[split]
            return ds
        files = [p] if p.is_file() else sorted(p.rglob("*.parquet"))
        if not files:
            raise SourceDataError(f"{p}: neither a save_to_disk folder nor parquet file(s)")
        return datasets.Dataset.from_parquet([str(f) for f in files])
    if _looks_like_path(spec):
        raise SourceMissingError(f"dataset path {p} not found")
    try:
        return datasets.load_dataset(spec, split=split)
    except Exception as e:  # the hub raises many kinds (connection, offline mode, not found)
        raise SourceMissingError(
            f"cannot load {spec!r} (split {split!r}) from the Hugging Face hub: {type(e).__name__}: {e}. "
            f"Without network access, give a local path instead: a folder written by Dataset.save_to_disk "
            f"or parquet file(s)") from None


def _class_names(feature: Any):
    """ClassLabel names of a feature, looking inside Sequence/List wrappers; None when absent."""
    seen = 0
    while feature is not None and seen < 4:
        names = getattr(feature, "names", None)
        if names and type(feature).__name__ == "ClassLabel":
            return list(names)
        feature = getattr(feature, "feature", None)
        seen += 1
    return None


@register_source("hf")
class HFSource(Source):
    """A Hugging Face dataset with an image column and a mask column or a label column."""

    type_name = "hf"
    config_schema = HFEntry  # the recipe keys (schema.py)
    prefix = "hf"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        c = self.config
        if not c.get("dataset"):
            raise SourceDataError("hf source: 'dataset' (hub id or local path) is required")
        self.spec = str(c["dataset"])
        self.split = str(c.get("split", "train"))
        self.image_column = str(c.get("image_column", "image"))
        self.mask_column = c.get("mask_column")
        self.label_column = c.get("label_column")
        if bool(self.mask_column) == bool(self.label_column):
            raise SourceDataError(f"hf source {self.spec}: give exactly one of mask_column and label_column")
        if self.label_column and not c.get("category"):
            raise SourceDataError(f"hf source {self.spec}: label_column needs a 'category' (e.g. scene, or a new one)")
        self.category = str(c.get("category", "object")).strip().lower()
        self.id_column = c.get("id_column")
        self.unlabeled = int_list(c.get("unlabeled", [0]), "unlabeled", f"hf source {self.spec}")
        self.rename = dict(c.get("rename") or {})
        self.limit = int(c.get("limit", 0) or 0)
        self.license = str(c.get("license", self.license))
        self.citation = str(c.get("citation", ""))
        self.origin = f"{self.spec} (split {self.split})"
        self._ds = None
        self._vocab = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ds"] = None
        return d

    @property
    def pixel_mode(self) -> bool:
        return bool(self.mask_column)

    def _as_declared(self, cell, column: str):
        """A nested-list cell as an array of the dtype its feature declares (``List(List(Value('uint16')))``
        or ``Array2D(dtype=...)``): Python lists carry no dtype, and np.asarray would make int64 of a
        uint16 image, which the decoder cannot scale by bit depth. Other cells are returned as they are."""
        if not isinstance(cell, (list, tuple)):
            return cell
        feat = self._dataset().features.get(column)
        while feat is not None and not isinstance(getattr(feat, "dtype", None), str):
            feat = getattr(feat, "feature", None)  # Sequence / List nest their item feature
        dtype = getattr(feat, "dtype", None)
        try:
            return np.asarray(cell, dtype=np.dtype(dtype)) if dtype else cell
        except TypeError:  # a dtype numpy does not know (string, ...): the decoder names the problem
            return cell

    def _dataset(self):
        if self._ds is None:
            self._ds = open_dataset(self.spec, self.split, self.origin,
                                    (self.image_column, self.mask_column, self.label_column, self.id_column))
        return self._ds

    def check(self) -> None:
        self._dataset()

    def image_level_categories(self) -> frozenset:
        base = frozenset({"scene", "texture"})
        return base - {self.category} if self.pixel_mode else base | {self.category}

    # ------------------------------------------------------------------ names
    def _configured_names(self) -> dict:
        names = self.config.get("names")
        if names is None:
            return {}
        if isinstance(names, Mapping):
            items = names.items()
        elif isinstance(names, (list, tuple)):
            items = enumerate(names)
        else:
            raise SourceDataError(f"{self.origin}: 'names' must be a list or a {{value: name}} mapping")
        out = {}
        for v, n in items:
            try:
                out[int(v)] = split_names(n)
            except (TypeError, ValueError):
                raise SourceDataError(f"{self.origin}: 'names' key {v!r} is not an integer") from None
        return {v: n for v, n in out.items() if n}

    def _value_table(self) -> ValueTable:
        if self._vocab is None:
            names = self._configured_names()
            origin = "the source entry's 'names'"
            if not names:
                feat = self._dataset().features[self.mask_column]
                cl = _class_names(feat)
                if cl is None:
                    raise SourceDataError(f"{self.origin}: column {self.mask_column!r} has no ClassLabel names; "
                                          f"give 'names' (value -> name) in the source entry")
                names = {i: (n,) for i, n in enumerate(cl)}
                origin = f"the ClassLabel names of column {self.mask_column!r} of {self.origin}"
            self._vocab = ValueTable({v: apply_rename(n, self.rename) for v, n in names.items()}, self.unlabeled, origin)
        return self._vocab

    def _label_names(self) -> tuple:
        """(code -> names, value -> code) for an image-level column (ints via names, or strings)."""
        if self._vocab is None:
            names = self._configured_names()
            if not names:
                cl = _class_names(self._dataset().features[self.label_column])
                names = {i: (n,) for i, n in enumerate(cl or [])}
            if names:
                code_of = {v: i + 1 for i, v in enumerate(sorted(names))}
                vocab = {code_of[v]: apply_rename(names[v], self.rename) for v in sorted(names)}
            else:  # string labels: the names are the values, collected over the column
                values = []
                for cell in self._dataset()[self.label_column]:
                    for s in (cell if isinstance(cell, (list, tuple)) else [cell]):
                        if s is not None and str(s).strip() and str(s).strip() not in values:
                            values.append(str(s).strip())
                values.sort()
                code_of = {v: i + 1 for i, v in enumerate(values)}
                vocab = {code_of[v]: apply_rename((v,), self.rename) for v in values}
            self._vocab = (vocab, code_of)
        return self._vocab

    # ------------------------------------------------------------------ interface
    def vocabulary(self) -> dict:
        if self.pixel_mode:
            return {self.category: self._value_table().vocabulary()}
        return {self.category: self._label_names()[0]}

    def records(self) -> list:
        ds = self._dataset()
        n = len(ds) if not self.limit else min(self.limit, len(ds))
        ids = ds[self.id_column][:n] if self.id_column else None
        width = max(6, len(str(max(n - 1, 0))))
        out, seen = [], set()
        for i in range(n):
            base = store_basename(str(ids[i]), f"{self.origin}: row {i} column {self.id_column!r}") if ids else f"{self.split}_{i:0{width}d}"
            if base in seen:
                raise SourceDataError(f"{self.origin}: row {i}: id {base!r} is not unique in column {self.id_column!r}")
            seen.add(base)
            out.append(ImageRecord(base, {"row": i}))
        return out

    def resolve(self, record: ImageRecord) -> Resolved:
        i = record.meta["row"]
        where = f"{self.origin}: row {i}"
        row = self._dataset()[i]
        if row.get(self.image_column) is None:
            raise BadSourceItem(f"{where}: empty {self.image_column!r}")
        rgb = to_rgb(self._as_declared(row[self.image_column], self.image_column), where)
        if self.pixel_mode:
            cell = row.get(self.mask_column)
            if cell is None:
                raise BadSourceItem(f"{where}: empty {self.mask_column!r}")
            values = mask_values(cell if hasattr(cell, "mode") else np.asarray(cell), f"{where} column {self.mask_column!r}")
            if values.shape != rgb.shape[:2]:
                raise BadSourceItem(f"{where}: mask is {values.shape[1]}x{values.shape[0]}, image {rgb.shape[1]}x{rgb.shape[0]}")
            codes = self._value_table().codes(values, f"{where} column {self.mask_column!r}")
            return Resolved(image=rgb, pixel={self.category: [codes]})
        _, code_of = self._label_names()
        cell = row.get(self.label_column)
        items = cell if isinstance(cell, (list, tuple)) else ([] if cell is None else [cell])
        codes = []
        for v in items:
            key = str(v).strip() if isinstance(v, str) else int(v)
            if isinstance(v, str) and key not in code_of and key.lstrip("-").isdigit():
                key = int(key)
            if key in ("", -1):  # ClassLabel's 'no label'
                continue
            if key not in code_of:
                raise SourceDataError(f"{where}: label {v!r} in column {self.label_column!r} has no name "
                                      f"(give 'names' in the source entry)")
            codes.append(code_of[key])
        return Resolved(image=rgb, image_level={self.category: codes})

    def provenance(self) -> dict:
        d = super().provenance()
        d["fingerprint"] = getattr(self._dataset(), "_fingerprint", None)
        return d
