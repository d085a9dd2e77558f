"""Where a segmenter source's images come from: a folder, a Hugging Face dataset, or another source.

The recipe key ``images`` takes one of three forms (schema.py)::

    images: my_images                       # a folder (searched recursively; a store's images/ folder too)
    images: {dataset: saved_ds, split: train, image_column: image}   # a Hugging Face dataset, read as the
                                            #   hf source reads it (save_to_disk folder or parquet, offline)
    images: {source: {type: ade20k, path: data/ade20k}}             # the images of any source entry;
                                            #   its own labels are not used

Each image set lists cheap picklable records (``records()``) and loads one record's image as
H x W x 3 uint8 RGB (``load(record)``); both are used by the segmenter source in the build's
processes, so an image set is picklable (datasets and inner sources reopen lazily).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..base import BadSourceItem, ImageRecord, SourceDataError, SourceMissingError
from ..common import load_rgb, store_basename, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class FolderImages:
    """The image files under a folder; store names are their relative paths without extension."""

    def __init__(self, folder: str):
        self.folder = Path(folder).expanduser()
        self.origin = f"image folder {self.folder}"

    def check(self) -> None:
        """SourceMissingError when the folder is absent."""
        if not self.folder.is_dir():
            raise SourceMissingError(f"image folder {self.folder} not found")

    def records(self) -> list:
        """ImageRecord(relative path without extension, {"path"}) per image file, sorted; SourceDataError
        when two files would get the same store name. In a Broden store (its root, its ``images/`` or
        a folder inside that) only the images its index.csv lists are taken: the label planes beside
        them (``*_object.png``, ...) are PNG files too, and not photos."""
        listed = _store_images(self.folder)
        out, seen = [], {}
        for p in sorted(self.folder.rglob("*")):
            if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if listed is not None and p.resolve() not in listed:
                continue
            base = store_basename(p.relative_to(self.folder).as_posix(), str(p))
            if base in seen:
                raise SourceDataError(f"{p} and {seen[base]} would get the same store name {base!r}")
            seen[base] = p
            out.append(ImageRecord(base, {"path": str(p)}))
        return out

    def load(self, record: ImageRecord) -> np.ndarray:
        """H x W x 3 uint8 RGB; BadSourceItem naming the file when unreadable."""
        return load_rgb(Path(record.meta["path"]))

    def provenance(self) -> dict:
        return {"folder": str(self.folder)}


def _store_images(folder: Path):
    """When ``folder`` is a Broden store's root, its ``images/`` folder or a folder inside that: the
    resolved paths of the images its index.csv lists (the ``image`` column, relative to ``images/``;
    docs/format.md); otherwise None. SourceDataError when that index.csv cannot be read."""
    import csv

    folder = folder.resolve()
    for root in (folder, *folder.parents):
        index, images = root / "index.csv", root / "images"
        if not index.is_file() or not images.is_dir():
            continue
        if folder != root and images != folder and images not in folder.parents:
            return None  # a store's other folders hold no photos anyway; leave them to the plain listing
        try:
            with open(index, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SourceDataError(f"{index}: cannot read the store's image list ({e})") from None
        if rows and "image" not in rows[0]:
            raise SourceDataError(f"{index}: no 'image' column; is {root} a Broden store?")
        return {(images / r["image"]).resolve() for r in rows if r.get("image")}
    return None


class DatasetImages:
    """The image column of a Hugging Face dataset split, opened as the ``hf`` source opens it."""

    def __init__(self, spec: Mapping[str, Any]):
        self.spec = str(spec["dataset"])
        self.split = str(spec.get("split") or "train")
        self.image_column = str(spec.get("image_column") or "image")
        self.id_column = spec.get("id_column")
        self.limit = int(spec.get("limit") or 0)
        self.origin = f"{self.spec} (split {self.split})"
        self._ds = None

    def __getstate__(self):  # workers reopen the dataset (memory-mapped Arrow files)
        d = dict(self.__dict__)
        d["_ds"] = None
        return d

    def _dataset(self):
        if self._ds is None:
            from ..hf.source import open_dataset

            self._ds = open_dataset(self.spec, self.split, self.origin, (self.image_column, self.id_column))
        return self._ds

    def check(self) -> None:
        """SourceMissingError / SourceDataError when the dataset or its columns are absent."""
        self._dataset()

    def records(self) -> list:
        """ImageRecord(id or <split>_<row>, {"row"}) per row (the first ``limit``); SourceDataError on a repeated id."""
        ds = self._dataset()
        n = len(ds) if not self.limit else min(self.limit, len(ds))
        ids = ds[self.id_column][:n] if self.id_column else None
        width = max(6, len(str(max(n - 1, 0))))
        out, seen = [], set()
        for i in range(n):
            base = (store_basename(str(ids[i]), f"{self.origin}: row {i} column {self.id_column!r}") if ids
                    else f"{self.split}_{i:0{width}d}")
            if base in seen:
                raise SourceDataError(f"{self.origin}: row {i}: id {base!r} is not unique in column {self.id_column!r}")
            seen.add(base)
            out.append(ImageRecord(base, {"row": i}))
        return out

    def load(self, record: ImageRecord) -> np.ndarray:
        """The row's image as H x W x 3 uint8 RGB; BadSourceItem naming the row when empty or unreadable."""
        i = record.meta["row"]
        cell = self._dataset()[i][self.image_column]
        if cell is None:
            raise BadSourceItem(f"{self.origin}: row {i}: empty {self.image_column!r}")
        return to_rgb(cell if hasattr(cell, "mode") else np.asarray(cell), f"{self.origin}: row {i}")

    def provenance(self) -> dict:
        return {"dataset": self.spec, "split": self.split, "image_column": self.image_column,
                "fingerprint": getattr(self._dataset(), "_fingerprint", None)}


class SourceImages:
    """The images of another source entry (any registered type); that source's labels are not used."""

    def __init__(self, entry: Mapping[str, Any], image_size: int, segmentation_size: int):
        from .. import get_source_class

        entry = dict(entry)
        if not isinstance(entry.get("type"), str) or not entry["type"]:
            raise SourceDataError("segmenter source: images.source needs a 'type' (a source entry such as "
                                  "{type: ade20k, path: ...})")
        if entry["type"] == "segmenter":
            raise SourceDataError("segmenter source: images.source cannot itself be a segmenter source")
        self.inner = get_source_class(entry["type"])(entry, image_size, segmentation_size)
        self.origin = f"the images of source {entry['type']!r}"

    def check(self) -> None:
        """The inner source's own check (its files present)."""
        self.inner.check()

    def records(self) -> list:
        """The inner source's records, unchanged (same store names as when it is built itself)."""
        return list(self.inner.records())

    def load(self, record: ImageRecord) -> np.ndarray:
        """The image the inner source resolves for ``record`` (H x W x 3 uint8); its labels are dropped."""
        return self.inner.resolve(record).image

    def provenance(self) -> dict:
        return {"source": self.inner.provenance()}


def image_set(images: Any, image_size: int, segmentation_size: int):
    """The image set of a recipe's ``images`` value (a folder path, {dataset: ...} or {source: {...}})."""
    if isinstance(images, (str, Path)):
        return FolderImages(str(images))
    if isinstance(images, Mapping) and "dataset" in images:
        return DatasetImages(images)
    if isinstance(images, Mapping) and isinstance(images.get("source"), Mapping):
        return SourceImages(images["source"], image_size, segmentation_size)
    raise SourceDataError(f"segmenter source: 'images' is a folder, {{dataset: PATH, ...}} or "
                          f"{{source: {{type: ..., ...}}}}, got {images!r}")
