"""The ``pascal`` source: VOC 2010 images with Pascal-Context objects and Pascal-Part parts.

Recipe entry: ``{type: pascal, path: DIR}``. Under ``DIR`` the three public archives are
extracted side by side (``VOCtrainval_03-May-2010.tar``, Pascal-Context's and Pascal-Part's
``trainval.tar.gz``)::

    DIR/VOCdevkit/VOC2010/JPEGImages/<id>.jpg     images
    DIR/trainval/<id>.mat, DIR/labels.txt           Pascal-Context (object)
    DIR/Annotations_Part/<id>.mat, DIR/part2ind.m   Pascal-Part (part, one layer)

The original build's layout (``VOC2010/`` directly under DIR, Context under ``context/``,
Part under ``part/``) is found too. Optional keys: ``categories`` (default
``[object, part]``; a missing annotation set is an error unless left out here).

Images: every id that has an annotation of an enabled category (the union of Context and
Part); an id annotated by only one of them gets only that category, and an annotation
whose JPEG is missing is skipped as a bad item naming the file. Context's ``unknown``
class is unlabeled (0), as in the original. Part masks are painted in file order (later
objects and parts over earlier ones) into one layer; names come from part2ind.m (see
partnames.py), one part code per (object class, part name) as the original (:func:`part_codes`).
Pascal-Part's own object masks are not used.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..downloadable import DownloadableSource
from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceMissingError
from ..common import load_rgb
from .matfiles import read_label_map, read_part_objects
from .partnames import Part2IndError, PartTable, load_part2ind
from .schema import PascalEntry
from ..terms import folder_terms

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CATEGORIES = ("object", "part")
#: Context class names that mean "no label" (mapped to 0, as the original build did).
UNLABELED_CONTEXT = frozenset({"unknown"})

_IMAGE_DIRS = ("VOCdevkit/VOC2010/JPEGImages", "VOC2010/JPEGImages", "JPEGImages")
_CONTEXT_DIRS = (".", "context", "pascal-context", "pascal_context")
_PART_DIRS = (".", "part", "pascal-part", "pascal_part")

GET_FILES = """\
A build downloads missing sources itself (or run `broden download RECIPE --only pascal`;
--offline says which file to put where). By hand, extract all three archives into {path}:
  VOCtrainval_03-May-2010.tar   {voc}
                                -> {path}/VOCdevkit/VOC2010/JPEGImages/
  trainval.tar.gz (Context)     {context}
                                -> {path}/trainval/*.mat and {path}/labels.txt
  trainval.tar.gz (Part)        {part}
                                -> {path}/Annotations_Part/*.mat and {path}/part2ind.m"""


def _first_dir(root: Path, candidates, marker: str) -> Optional[Path]:
    for c in candidates:
        d = (root / c).resolve() if c != "." else root
        if (d / marker).exists():
            return d
    return None


def parse_context_labels(path: Path) -> dict:
    """labels.txt ('N: name' per line) -> {N: name}. Malformed lines raise SourceMissingError naming the line."""
    out = {}
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError as e:
        raise SourceMissingError(f"{path}: cannot read ({e})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.match(r"^\s*(\d+)\s*:\s*(.*?)\s*$", line)
        if not m or not m.group(2):
            raise SourceMissingError(f"{path}:{lineno}: expected 'N: name', got {line!r}")
        n = int(m.group(1))
        if n < 1 or n in out:
            raise SourceMissingError(f"{path}:{lineno}: label id {n} is {'repeated' if n in out else 'not >= 1'}")
        out[n] = m.group(2)
    if not out:
        raise SourceMissingError(f"{path}: no labels")
    return out


def part_codes(table: PartTable) -> dict:
    """(object class, readable part name) -> part code 1.., in part2ind.m's order of first appearance.

    One code per object class and part name, as the original build (docs/format.md, "Pascal-Part
    codes"): a cat's ear and a dog's ear are two codes named ``ear``, a cat's left and right ear one.
    Frequencies are counted per code and summed per name when the names merge (rules 2, 4, 5), so
    an image showing both ears adds 2 to ``ear``. Parts without a readable name get no code (0).
    """
    codes: dict = {}
    for cls in table.classes:
        for name in table.parts.get(cls, {}).values():
            if name and (cls, name) not in codes:
                codes[(cls, name)] = len(codes) + 1
    return codes


@register_source("pascal")
class PascalSource(DownloadableSource, Source):
    """Pascal VOC 2010 images; objects from Pascal-Context, parts from Pascal-Part."""

    type_name = "pascal"
    config_schema = PascalEntry  # the recipe keys (schema.py)
    prefix = "pascal"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        if "path" not in self.config:
            raise ValueError("pascal source: 'path' (the folder the Pascal archives extract into) is required")
        self.root = Path(self.config["path"]).expanduser()
        cats = self.config.get("categories", list(CATEGORIES))
        cats = [cats] if isinstance(cats, str) else list(cats)
        unknown = [c for c in cats if c not in CATEGORIES]
        if unknown or not cats:
            raise ValueError(f"pascal source: categories must be a non-empty subset of {list(CATEGORIES)}, got {cats}")
        self.categories = tuple(c for c in CATEGORIES if c in cats)
        self._loaded = False

    def resources(self) -> list:
        """The VOC archive, plus the Context and/or Part archive for the enabled categories."""
        wanted = {"object": "pascal-context/", "part": "pascal-part/"}
        skip = tuple(v for c, v in wanted.items() if c not in self.categories)
        return [r for r in super().resources() if not (skip and r.filename.startswith(skip))]

    # ------------------------------------------------------------------ layout
    def _locate(self) -> None:
        """Find the folders and parse the name tables (raises SourceMissingError with instructions)."""
        if self._loaded:
            return
        root = self.root
        urls = {"voc": "", "context": "", "part": ""}
        try:
            for r in DownloadableSource.resources(self):
                key = "context" if r.filename.startswith("pascal-context/") else \
                    "part" if r.filename.startswith("pascal-part/") else "voc"
                urls[key] = r.url
        except Exception:  # a broken checksums file must not hide the real problem
            pass
        how = GET_FILES.format(path=root, **urls)
        if not root.is_dir():
            raise SourceMissingError(f"Pascal folder {root} does not exist.\n{how}")
        img = next((root / c for c in _IMAGE_DIRS if (root / c).is_dir()), None)
        if img is None:
            raise SourceMissingError(f"no VOC 2010 images under {root} (looked for {', '.join(_IMAGE_DIRS)}).\n{how}")
        self.image_dir = img
        self.context_dir = self.part_dir = None
        missing = []
        if "object" in self.categories:
            self.context_dir = _first_dir(root, _CONTEXT_DIRS, "labels.txt")
            if self.context_dir is None or not (self.context_dir / "trainval").is_dir():
                missing.append("Pascal-Context (labels.txt and trainval/)")
        if "part" in self.categories:
            self.part_dir = _first_dir(root, _PART_DIRS, "part2ind.m")
            if self.part_dir is None or not (self.part_dir / "Annotations_Part").is_dir():
                missing.append("Pascal-Part (part2ind.m and Annotations_Part/)")
        if missing:
            raise SourceMissingError(
                f"{' and '.join(missing)} not found under {root}.\n{how}\n"
                f"(or leave the category out with 'categories: [...]' in the recipe entry)")
        self.context_names = {}
        if self.context_dir is not None:
            self.context_names = parse_context_labels(self.context_dir / "labels.txt")
        self.part_table: Optional[PartTable] = None
        self.part_codes = {}
        if self.part_dir is not None:
            try:
                self.part_table = load_part2ind(self.part_dir / "part2ind.m")
            except (Part2IndError, OSError) as e:
                raise SourceMissingError(f"cannot use Pascal-Part's part table: {e}") from None
            self.part_codes = part_codes(self.part_table)
        self._loaded = True

    def check(self) -> None:
        self._locate()

    # ------------------------------------------------------------------ vocabulary
    def vocabulary(self) -> dict:
        self._locate()
        voc = {}
        if self.context_dir is not None:
            voc["object"] = {n: (name,) for n, name in sorted(self.context_names.items())
                             if name not in UNLABELED_CONTEXT}
        if self.part_table is not None:
            voc["part"] = {code: (name,) for (_cls, name), code in self.part_codes.items()}
        return voc

    def image_level_categories(self) -> frozenset:
        return frozenset()

    # ------------------------------------------------------------------ records
    def records(self) -> list:
        self._locate()
        ids = {}
        if self.context_dir is not None:
            for p in (self.context_dir / "trainval").glob("*.mat"):
                ids.setdefault(p.stem, set()).add("object")
        if self.part_dir is not None:
            for p in (self.part_dir / "Annotations_Part").glob("*.mat"):
                ids.setdefault(p.stem, set()).add("part")
        only = {c: sum(1 for v in ids.values() if v == {c}) for c in self.categories}
        if len(self.categories) > 1 and any(only.values()):
            log.info("pascal: %s", ", ".join(f"{n} image(s) have only {c} annotations" for c, n in only.items() if n))
        return [ImageRecord(i, {"id": i, "has": tuple(sorted(ids[i]))}) for i in sorted(ids)]

    # ------------------------------------------------------------------ resolve
    def resolve(self, record: ImageRecord) -> Resolved:
        self._locate()
        ident = record.meta["id"]
        jpg = self.image_dir / f"{ident}.jpg"
        if not jpg.is_file():
            raise BadSourceItem(f"{jpg}: image is missing (it has annotations in {', '.join(record.meta['has'])})")
        rgb = load_rgb(jpg)
        h, w = rgb.shape[:2]
        pixel = {}
        if "object" in record.meta["has"] and self.context_dir is not None:
            pixel["object"] = [self._objects(self.context_dir / "trainval" / f"{ident}.mat", (h, w))]
        if "part" in record.meta["has"] and self.part_table is not None:
            pixel["part"] = [self._parts(self.part_dir / "Annotations_Part" / f"{ident}.mat", (h, w))]
        return Resolved(image=rgb, pixel=pixel)

    def _objects(self, path: Path, shape: tuple) -> np.ndarray:
        max_id = max(self.context_names)
        lm = read_label_map(path, max_id)
        if lm.shape != shape:
            raise BadSourceItem(f"{path}: LabelMap is {lm.shape[1]}x{lm.shape[0]}, the image is {shape[1]}x{shape[0]}")
        table = np.arange(max_id + 1, dtype=np.int32)
        for n, name in self.context_names.items():
            if name in UNLABELED_CONTEXT:
                table[n] = 0
        for n in set(range(1, max_id + 1)) - set(self.context_names):
            table[n] = 0  # an id with no line in labels.txt
        present = np.unique(lm)
        gaps = [int(v) for v in present if v > 0 and int(v) not in self.context_names]
        if gaps:
            raise BadSourceItem(f"{path}: LabelMap holds label id(s) {gaps} that labels.txt does not name")
        return table[lm]

    def _parts(self, path: Path, shape: tuple) -> np.ndarray:
        table = self.part_table
        out = np.zeros(shape, dtype=np.int32)
        for obj in read_part_objects(path):
            cls = obj.class_name
            if cls not in table.parts:
                if obj.class_ind and 1 <= obj.class_ind <= len(table.classes):
                    cls = table.classes[obj.class_ind - 1]
                else:
                    raise BadSourceItem(f"{path}: unknown object class {obj.class_name!r} (part2ind.m knows {list(table.classes)})")
            names = table.parts[cls]
            for raw, mask in obj.parts:
                if raw not in names:
                    raise BadSourceItem(f"{path}: unknown part name {raw!r} for class {cls!r} (not in part2ind.m)")
                if mask.shape != shape:
                    raise BadSourceItem(f"{path}: mask of part {raw!r} is {mask.shape[1]}x{mask.shape[0]}, "
                                        f"the image is {shape[1]}x{shape[0]}")
                out[mask.astype(bool)] = self.part_codes.get((cls, names[raw]), 0)
        return out

    def provenance(self) -> dict:
        d = super().provenance()
        self._locate()
        d.update({
            "version": "VOC2010 + Pascal-Context + Pascal-Part",
            "images": str(self.image_dir),
            "context": str(self.context_dir) if self.context_dir else None,
            "part": str(self.part_dir) if self.part_dir else None,
            "categories": list(self.categories),
            "checksums": str(HERE / "checksums.tsv"),
        })
        return d
