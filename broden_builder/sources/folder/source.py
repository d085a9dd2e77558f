"""The ``folder`` source: a plain folder of images with mask PNGs, or with image-level labels.

Pixel labels (``masks`` given)::

    - type: folder
      images: my_data/images           # *.jpg / *.png / ... (searched recursively)
      masks: my_data/masks             # masks/<same relative path, suffix .png>
      labels: my_data/labels.csv       # columns value,name  (or color,name with '#rrggbb')
      category: shape                  # a new category becomes a new column of the store
      mask_suffix: ""                  # e.g. "_mask" for masks/<stem>_mask.png
      unlabeled: [0]                   # mask values that mean 'no label' (default [0])
      missing_masks: error             # error (default) | skip: images without a mask file
      exif_orientation: false          # turn images upright by their EXIF tag (masks must then be upright too)

Image-level labels (no ``masks``)::

    - type: folder
      images: my_data/images
      labels: my_data/labels.csv       # columns image,label: image relative to images/, labels ';'-joined
      category: action                 # the category is image-level (like scene, texture)
      exif_orientation: true           # default here: images are turned upright by their EXIF tag

In the names table a name may carry synonyms, ';'-joined (``car;automobile``). A mask
value missing from it stops the build with an error naming the mask and the table.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceDataError, SourceMissingError
from ..common import ValueTable, apply_rename, int_list, load_rgb, parse_value, read_mask_file, split_names, store_basename
from .schema import FolderEntry
from ..terms import folder_terms

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_table(path: Path) -> tuple:
    """(header, rows as dicts with their 1-based CSV line number) of a UTF-8 CSV; SourceDataError when unreadable."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise SourceMissingError(f"labels file {path} not found") from None
    except UnicodeDecodeError as e:
        raise SourceDataError(f"{path}: not UTF-8 text ({e})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise SourceDataError(f"{path}: malformed CSV ({e})") from None
    if not rows:
        raise SourceDataError(f"{path}: empty file (expected a header)")
    header = [h.strip().lower() for h in rows[0]]
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        out.append((n, {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}))
    return header, out


@register_source("folder")
class FolderSource(Source):
    """Images plus masks and a value->name table, or images plus a table of image-level labels."""

    type_name = "folder"
    config_schema = FolderEntry  # the recipe keys (schema.py)
    prefix = "folder"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        c = self.config
        for key in ("images", "labels", "category"):
            if not c.get(key):
                raise SourceDataError(f"folder source: '{key}' is required (images: DIR, labels: FILE.csv, category: NAME)")
        self.image_dir = Path(c["images"]).expanduser()
        self.mask_dir = Path(c["masks"]).expanduser() if c.get("masks") else None
        self.labels_file = Path(c["labels"]).expanduser()
        self.category = str(c["category"]).strip().lower()
        self.mask_suffix = str(c.get("mask_suffix", ""))
        self.unlabeled = int_list(c.get("unlabeled", [0]), "unlabeled", "folder source")
        self.missing_masks = str(c.get("missing_masks", "error"))
        self.rename = dict(c.get("rename") or {})
        # EXIF orientation: image-level labels hold for the upright image; masks are drawn on the stored pixels
        self.exif_orientation = bool(c.get("exif_orientation", not c.get("masks")))
        self.license = str(c.get("license", self.license))
        self.citation = str(c.get("citation", ""))
        self._table = None
        self._image_labels = None

    @property
    def pixel_mode(self) -> bool:
        return self.mask_dir is not None

    def check(self) -> None:
        for p, what in ((self.image_dir, "image folder"), (self.mask_dir, "mask folder")):
            if p is not None and not p.is_dir():
                raise SourceMissingError(f"{what} {p} not found")
        if not self.labels_file.is_file():
            raise SourceMissingError(f"labels file {self.labels_file} not found")

    def image_level_categories(self) -> frozenset:
        base = frozenset({"scene", "texture"})
        return base - {self.category} if self.pixel_mode else base | {self.category}

    # ------------------------------------------------------------------ tables
    def _names(self) -> ValueTable:
        if self._table is None:
            header, rows = read_table(self.labels_file)
            key = "value" if "value" in header else "color" if "color" in header else None
            if key is None or "name" not in header:
                raise SourceDataError(f"{self.labels_file}: header {header} must have 'value' (or 'color') and 'name' columns")
            names = {}
            for n, row in rows:
                where = f"{self.labels_file}: line {n}"
                v = parse_value(row[key], where)
                nm = split_names(row["name"])
                if not nm:
                    raise SourceDataError(f"{where}: value {v} has an empty name")
                if v in names:
                    raise SourceDataError(f"{where}: value {v} is named twice")
                names[v] = apply_rename(nm, self.rename)
            self._table = ValueTable(names, self.unlabeled, str(self.labels_file))
        return self._table

    def _labels(self) -> tuple:
        """(code -> names, image relative path -> [codes]) of an image-level table."""
        if self._image_labels is None:
            header, rows = read_table(self.labels_file)
            if "image" not in header or "label" not in header:
                raise SourceDataError(f"{self.labels_file}: header {header} must have 'image' and 'label' columns")
            code_of, per_image = {}, {}
            for n, row in rows:
                where = f"{self.labels_file}: line {n}"
                img = row["image"].replace("\\", "/")
                if not img:
                    raise SourceDataError(f"{where}: empty image name")
                if not (self.image_dir / img).is_file():
                    raise SourceDataError(f"{where}: image {img!r} not found in {self.image_dir}")
                codes = per_image.setdefault(img, [])
                for name in split_names(row["label"]):
                    code = code_of.setdefault(name, len(code_of) + 1)
                    if code not in codes:
                        codes.append(code)
            vocab = {c: apply_rename((n,), self.rename) for n, c in code_of.items()}
            self._image_labels = (vocab, per_image)
        return self._image_labels

    # ------------------------------------------------------------------ interface
    def vocabulary(self) -> dict:
        if self.pixel_mode:
            return {self.category: self._names().vocabulary()}
        return {self.category: self._labels()[0]}

    def _mask_path(self, rel: Path) -> Path:
        return self.mask_dir / rel.parent / (rel.stem + self.mask_suffix + ".png")

    def records(self) -> list:
        if not self.pixel_mode:
            _, per_image = self._labels()
            return [ImageRecord(store_basename(img, str(self.labels_file)), {"path": str(self.image_dir / img), "codes": codes})
                    for img, codes in sorted(per_image.items())]
        self._names()  # fail early on a bad names table
        out, seen = [], {}
        for p in sorted(self.image_dir.rglob("*")):
            if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            rel = p.relative_to(self.image_dir)
            mask = self._mask_path(rel)
            if not mask.is_file():
                if self.missing_masks == "skip":
                    continue
                raise SourceDataError(f"{p}: no mask {mask} (set missing_masks: skip to leave such images out)")
            base = store_basename(rel.as_posix(), str(p))
            if base in seen:
                raise SourceDataError(f"{p} and {seen[base]} would get the same store name {base!r}")
            seen[base] = p
            out.append(ImageRecord(base, {"path": str(p), "mask": str(mask)}))
        return out

    def resolve(self, record: ImageRecord) -> Resolved:
        m = record.meta
        rgb = load_rgb(Path(m["path"]), exif=self.exif_orientation)
        if not self.pixel_mode:
            return Resolved(image=rgb, image_level={self.category: list(m["codes"])})
        values = read_mask_file(Path(m["mask"]))
        if values.shape != rgb.shape[:2]:
            raise BadSourceItem(f"{m['mask']}: mask is {values.shape[1]}x{values.shape[0]}, image {m['path']} is {rgb.shape[1]}x{rgb.shape[0]}")
        return Resolved(image=rgb, pixel={self.category: [self._names().codes(values, m["mask"])]})

    def provenance(self) -> dict:
        d = super().provenance()
        d["mode"] = "pixel" if self.pixel_mode else "image"
        return d
