"""The ``coco`` source: COCO-format instances, stuff or panoptic annotations (decoded with pycocotools).

Recipe entry::

    - type: coco
      annotations: annotations/instances_val2017.json
      images: val2017                  # folder holding the images' file_name
      category: object                 # store category of the COCO classes (default object)
      annotation_type: auto            # auto | instances | stuff | panoptic
      panoptic_masks: DIR              # panoptic PNG folder (default: the JSON path without .json)
      stuff_category: object           # panoptic only: category of 'stuff' (isthing 0) classes
      crowd: label                     # label (default): crowd regions carry their class; unlabeled: left 0
      keep_unannotated: false          # keep images that have no annotation (colour labels only)
      layering: paint                  # paint (default): one layer, larger instances first so smaller
                                       #   ones stay visible; layers: overlapping instances of other
                                       #   classes go to extra layers (dominant layer first)
      ignore: [other]                  # class names left unlabeled (default [other] for stuff)
      clean_names: true                # 'wall-other-merged' -> 'wall' (panoptic/stuff names)
      rename: {mouse: computer mouse}  # optional, first name -> new name (old one kept as synonym)
      missing_images: error            # error (default) | skip: images listed but absent on disk
      limit: 0                         # only the first N images (by file name), 0 = all

Segmentations may be polygons, uncompressed RLE ({counts: [...], size: [h, w]}) or
compressed RLE (counts as a string). Malformed annotations stop the build with an
error naming the JSON file and the annotation (SourceDataError).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceDataError, SourceMissingError
from ..common import apply_rename, load_label_rgb, load_rgb, store_basename
from .schema import CocoEntry
from ..terms import folder_terms

log = logging.getLogger(__name__)

_TYPES = ("auto", "instances", "stuff", "panoptic")


def clean_coco_name(name: str) -> str:
    """Panoptic/stuff class names: drop '-merged', '-other' and '-stuff' suffixes, '-' to ' '."""
    n = re.sub(r"(-merged|-other|-stuff)+$", "", str(name).strip())
    return n.replace("-", " ").strip() or str(name)


def _pycocotools_mask():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:  # pragma: no cover (depends on the environment)
        raise SourceMissingError("the coco source needs pycocotools: pip install 'broden-dissect[coco]'") from None
    return mask_utils


@register_source("coco")
class CocoSource(Source):
    """COCO instances / stuff / panoptic annotations as one pixel category (see the module docstring)."""

    type_name = "coco"
    config_schema = CocoEntry  # the recipe keys (schema.py)
    prefix = "coco"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        c = self.config
        for key in ("annotations", "images"):
            if not c.get(key):
                raise SourceDataError(f"coco source: '{key}' is required (annotations: FILE.json, images: DIR)")
        self.ann_file = Path(c["annotations"]).expanduser()
        self.image_dir = Path(c["images"]).expanduser()
        self.category = str(c.get("category", "object"))
        self.stuff_category = str(c.get("stuff_category", self.category))
        self.kind = str(c.get("annotation_type", "auto"))
        if self.kind not in _TYPES:
            raise SourceDataError(f"coco source: annotation_type must be one of {_TYPES}, got {self.kind!r}")
        self.crowd = str(c.get("crowd", "label"))
        if self.crowd not in ("label", "unlabeled"):
            raise SourceDataError(f"coco source: crowd must be 'label' or 'unlabeled', got {self.crowd!r}")
        self.layering = str(c.get("layering", "paint"))
        if self.layering not in ("paint", "layers"):
            raise SourceDataError(f"coco source: layering must be 'paint' or 'layers', got {self.layering!r}")
        if self.stuff_category != self.category and self.layering != "paint":
            log.info("coco: stuff_category set; panoptic segments never overlap, layering ignored")
        self.keep_unannotated = bool(c.get("keep_unannotated", False))
        self.missing_images = str(c.get("missing_images", "error"))
        self.clean_names = bool(c.get("clean_names", True))
        self.rename = dict(c.get("rename") or {})
        self.limit = int(c.get("limit", 0) or 0)
        pm = c.get("panoptic_masks")
        self.panoptic_dir = Path(pm).expanduser() if pm else self.ann_file.with_suffix("")
        self._data = None  # parsed and checked annotations (rebuilt lazily in each process)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_data"] = None
        return d

    # ------------------------------------------------------------------ loading
    def check(self) -> None:
        if not self.ann_file.is_file():
            raise SourceMissingError(f"COCO annotation file {self.ann_file} not found (download the annotations from cocodataset.org)")
        if not self.image_dir.is_dir():
            raise SourceMissingError(f"COCO image folder {self.image_dir} not found")
        _pycocotools_mask()

    def _read_json(self) -> dict:
        """The annotation file as a dict with lists 'images', 'categories' and 'annotations' (an absent
        'annotations' reads as []). Raises SourceMissingError / SourceDataError naming the file."""
        f = self.ann_file
        try:
            raw = json.loads(f.read_text("utf-8"))
        except FileNotFoundError:
            raise SourceMissingError(f"COCO annotation file {f} not found") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise SourceDataError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise SourceDataError(f"{f}: expected a JSON object with 'images', 'annotations', 'categories'")
        for key in ("images", "categories"):
            if not isinstance(raw.get(key), list):
                raise SourceDataError(f"{f}: missing list '{key}'")
        raw.setdefault("annotations", [])
        if not isinstance(raw["annotations"], list):
            raise SourceDataError(f"{f}: 'annotations' must be a list")
        return raw

    def _load(self) -> dict:
        if self._data is not None:
            return self._data
        f = self.ann_file
        raw = self._read_json()
        anns = raw["annotations"]
        kind = self.kind
        if kind == "auto":
            kind = "panoptic" if any(isinstance(a, dict) and "segments_info" in a for a in anns) else "instances"
        ignore = set(self.config.get("ignore", ["other"] if kind == "stuff" else []))
        cats, code_of, vocab, thing = {}, {}, {self.category: {}}, {}
        vocab.setdefault(self.stuff_category, {})
        for i, cat in enumerate(raw["categories"]):
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise SourceDataError(f"{f}: categories[{i}] needs 'id' and 'name', got {cat!r}")
            cats[cat["id"]] = cat
        for cid in sorted(cats, key=lambda x: (str(type(x)), x)):
            cat = cats[cid]
            name = str(cat["name"])
            if name in ignore:
                continue
            code_of[cid] = len(code_of) + 1
            is_thing = bool(cat.get("isthing", 1))
            thing[cid] = is_thing
            shown = clean_coco_name(name) if self.clean_names and kind in ("panoptic", "stuff") else name
            names = apply_rename((shown,) + ((name,) if shown != name else ()), self.rename)
            target = self.category if (kind != "panoptic" or is_thing) else self.stuff_category
            vocab[target][code_of[cid]] = names
        images = {}
        for i, im in enumerate(raw["images"]):
            if not isinstance(im, dict) or not {"id", "file_name", "width", "height"} <= set(im):
                raise SourceDataError(f"{f}: images[{i}] needs id, file_name, width and height, got {im!r}")
            images[im["id"]] = im
        per_image: dict = {}
        for i, a in enumerate(anns):
            rec = f"annotations[{i}]" + (f" (id {a.get('id')})" if isinstance(a, dict) and "id" in a else "")
            if not isinstance(a, dict) or "image_id" not in a:
                raise SourceDataError(f"{f}: {rec} has no image_id")
            im = images.get(a["image_id"])
            if im is None:
                raise SourceDataError(f"{f}: {rec} references image_id {a['image_id']!r}, which is not in 'images'")
            if kind == "panoptic":
                self._check_panoptic(a, rec, cats)
            else:
                self._check_instance(a, rec, cats, im)
            per_image.setdefault(a["image_id"], []).append(a)
        order = sorted(images.values(), key=lambda im: (str(im["file_name"]), str(im["id"])))
        if not self.keep_unannotated:
            order = [im for im in order if im["id"] in per_image]
        if self.limit:
            order = order[: self.limit]
        self._data = {"kind": kind, "images": order, "anns": per_image, "code": code_of, "vocab": vocab,
                      "thing": thing}
        return self._data

    def _check_instance(self, a: dict, rec: str, cats: dict, im: dict) -> None:
        f = self.ann_file
        if a.get("category_id") not in cats:
            raise SourceDataError(f"{f}: {rec} has category_id {a.get('category_id')!r}, which is not in 'categories'")
        seg = a.get("segmentation")
        if isinstance(seg, list):
            if not seg:
                raise SourceDataError(f"{f}: {rec} has an empty polygon list")
            for k, poly in enumerate(seg):
                if not isinstance(poly, list) or len(poly) % 2 or not all(isinstance(v, (int, float)) for v in poly):
                    raise SourceDataError(f"{f}: {rec} polygon {k} must be a flat list [x1, y1, x2, y2, ...] of numbers")
                if len(poly) < 6:
                    raise SourceDataError(f"{f}: {rec} polygon {k} has {len(poly) // 2} point(s); a polygon needs at least 3")
        elif isinstance(seg, dict):
            if "counts" not in seg or "size" not in seg:
                raise SourceDataError(f"{f}: {rec} RLE segmentation needs 'counts' and 'size'")
            if list(seg["size"]) != [im["height"], im["width"]]:
                raise SourceDataError(f"{f}: {rec} RLE size {seg['size']} differs from its image's [height, width] "
                                      f"[{im['height']}, {im['width']}]")
        else:
            raise SourceDataError(f"{f}: {rec} has no usable 'segmentation' (polygons or RLE)")

    def _check_panoptic(self, a: dict, rec: str, cats: dict) -> None:
        f = self.ann_file
        if not isinstance(a.get("segments_info"), list) or not a.get("file_name"):
            raise SourceDataError(f"{f}: {rec} needs 'file_name' (the PNG) and a 'segments_info' list")
        for k, s in enumerate(a["segments_info"]):
            if not isinstance(s, dict) or "id" not in s or s.get("category_id") not in cats:
                raise SourceDataError(f"{f}: {rec} segments_info[{k}] needs an 'id' and a known category_id, got {s!r}")

    # ------------------------------------------------------------------ interface
    def vocabulary(self) -> dict:
        return {c: dict(v) for c, v in self._load()["vocab"].items() if v}

    def image_level_categories(self) -> frozenset:
        return frozenset({"scene", "texture"}) - {self.category, self.stuff_category}

    def records(self) -> list:
        data = self._load()
        out, missing = [], []
        for im in data["images"]:
            path = self.image_dir / str(im["file_name"])
            if not path.is_file():
                if self.missing_images == "skip":
                    missing.append(str(path))
                    continue
                raise SourceDataError(f"{self.ann_file}: image id {im['id']!r} names {im['file_name']!r}, "
                                      f"but {path} does not exist (set missing_images: skip to leave such images out)")
            meta: dict = {"path": str(path), "id": im["id"], "height": int(im["height"]), "width": int(im["width"])}
            if data["kind"] == "panoptic":
                pan = data["anns"].get(im["id"])
                if pan:
                    png = self.panoptic_dir / str(pan[0]["file_name"])
                    if not png.is_file():
                        raise SourceDataError(f"{self.ann_file}: panoptic annotation of image id {im['id']!r} names "
                                              f"{pan[0]['file_name']!r}, but {png} does not exist")
                    meta["png"] = str(png)
            out.append(ImageRecord(store_basename(im["file_name"], f"{self.ann_file}: image id {im['id']!r}"), meta))
        if missing:
            log.warning("coco: %d listed image(s) missing on disk were left out, e.g. %s", len(missing), missing[0])
        return out

    def resolve(self, record: ImageRecord) -> Resolved:
        data = self._load()
        m = record.meta
        rgb = load_rgb(Path(m["path"]))
        h, w = m["height"], m["width"]
        if rgb.shape[:2] != (h, w):
            raise BadSourceItem(f"{m['path']}: image is {rgb.shape[1]}x{rgb.shape[0]}, {self.ann_file} says {w}x{h}")
        anns = data["anns"].get(m["id"], [])
        if data["kind"] == "panoptic":
            pixel = self._panoptic_planes(m, anns[0] if anns else None, data)
        else:
            pixel = {self.category: self._instance_layers(anns, h, w, data)}
        pixel = {c: layers for c, layers in pixel.items() if layers}
        return Resolved(image=rgb, pixel=pixel)

    def provenance(self) -> dict:
        d = super().provenance()
        d.update({"annotation_type": self._load()["kind"], "images_listed": len(self._load()["images"])})
        return d

    # ------------------------------------------------------------------ decoding
    def _instance_layers(self, anns: list, h: int, w: int, data: dict) -> list:
        """Decoded instances painted largest first (one layer) or stacked into layers."""
        mask_utils = _pycocotools_mask()
        items = []
        for a in anns:
            code = data["code"].get(a["category_id"])
            if code is None or (a.get("iscrowd") and self.crowd == "unlabeled"):
                continue
            mask = decode_segmentation(mask_utils, a["segmentation"], h, w)
            area = int(mask.sum())
            if area:
                items.append((-area, str(a.get("id", "")), code, mask))
        items.sort(key=lambda t: (t[0], t[1]))
        if not items:
            return []
        if self.layering == "paint":
            plane = np.zeros((h, w), np.int32)
            for _, _, code, mask in items:
                plane[mask] = code
            return [plane]
        layers: list = []
        for _, _, code, mask in items:
            for layer in layers:
                under = layer[mask]
                if not np.any((under != 0) & (under != code)):
                    layer[mask] = code
                    break
            else:
                layer = np.zeros((h, w), np.int32)
                layer[mask] = code
                layers.append(layer)
        return layers

    def _panoptic_planes(self, meta: dict, ann, data: dict) -> dict:
        if ann is None or "png" not in meta:
            return {}
        png = Path(meta["png"])
        seg = load_label_rgb(png).astype(np.int64)
        ids = seg[..., 0] + 256 * seg[..., 1] + 65536 * seg[..., 2]
        if ids.shape != (meta["height"], meta["width"]):
            raise BadSourceItem(f"{png}: panoptic PNG is {ids.shape[1]}x{ids.shape[0]}, the image is {meta['width']}x{meta['height']}")
        to_code, to_cat = {0: 0}, {}
        for s in ann["segments_info"]:
            code = data["code"].get(s["category_id"], 0)
            if s.get("iscrowd") and self.crowd == "unlabeled":
                code = 0
            to_code[int(s["id"])] = code
            if code:
                to_cat[code] = self.category if data["thing"].get(s["category_id"], True) else self.stuff_category
        vals, inv = np.unique(ids, return_inverse=True)
        table = np.zeros(len(vals), np.int32)
        for i, v in enumerate(vals.tolist()):
            if v not in to_code:
                raise SourceDataError(f"{png}: segment id {v} (R + 256 G + 65536 B) is not in the segments_info of "
                                      f"image id {meta['id']!r} in {self.ann_file}")
            table[i] = to_code[v]
        codes = table[inv.reshape(ids.shape)]
        out: dict = {}
        for cat in sorted(set(to_cat.values())):
            plane = np.where(np.isin(codes, [c for c, k in to_cat.items() if k == cat]), codes, 0).astype(np.int32)
            if plane.any():
                out[cat] = [plane]
        return out


def decode_segmentation(mask_utils: Any, seg: Any, h: int, w: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as an H x W bool mask."""
    if isinstance(seg, list):
        rles = mask_utils.frPyObjects([list(map(float, p)) for p in seg], h, w)
        rle = mask_utils.merge(rles)
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        counts = seg["counts"]
        rle = {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    import warnings

    with warnings.catch_warnings():  # pycocotools' numpy 2 'copy keyword' deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)
