"""The ``ade20k`` source: ADE20K full releases 2016-07-26 (Broden's) and 2021-17-01.

Recipe entry: ``{type: ade20k, version: "2016" | "2021", path: DIR}``. ``DIR`` holds the
extracted release (``DIR/ADE20K_2016_07_26/...`` or ``DIR/ADE20K_2021_17_01/...``; the
release folder itself is accepted too). Both releases need registration on the ADE20K
site, so nothing is downloaded: when the files are missing, :meth:`check` says how to get them.

Labels: objects from ``X_seg.png`` and one part layer per level from ``X_parts_N.png``
(class = (R // 10) * 256 + G; see :mod:`.encoding`), scene per image. 2016 codes are
1-based indices into the index's ``objectnames``; 2021 codes are the JSON ``name_ndx``.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceMissingError
from ..decode import load_image
from .encoding import load_class_map, part_files
from .index2016 import VOID_NAMES, load_index, presence_counts
from .schema import Ade20kEntry
from ..terms import folder_terms

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
RELEASES = {"2016": "ADE20K_2016_07_26", "2021": "ADE20K_2021_17_01"}
SITE = "https://groups.csail.mit.edu/vision/datasets/ADE20K/"


def how_to_get(version: str, path: Path) -> str:
    """Instructions printed when the release is missing."""
    rel = RELEASES[version]
    from ..manual import manual_instructions

    items = ([f"{rel}/index_ade20k.mat", f"{rel}/images/training/<letter>/<scene>/ADE_train_*.jpg (+ _seg.png, _parts_N.png)",
              f"{rel}/images/validation/<letter>/<scene>/ADE_val_*.jpg"] if version == "2016" else
             [f"{rel}/images/ADE/training/<scene path>/X.jpg with X_seg.png, X_parts_N.png, X.json",
              f"{rel}/images/ADE/validation/..."])
    notes = ("The old direct zip URL is gone; the terms are in broden_builder/sources/ade20k/LICENSE.md."
             + ("" if version == "2016" else " index_ade20k.pkl and objects.txt are optional."))
    return manual_instructions(f"ADE20K {rel}", SITE, items, path, archive=f"{rel}.zip", notes=notes)


@register_source("ade20k")
class ADE20KSource(Source):
    """ADE20K objects, parts (one layer per level) and scenes, 2016 or 2021 release."""

    type_name = "ade20k"
    config_schema = Ade20kEntry  # the recipe keys (schema.py)
    prefix = "ade20k"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        self.version = str(self.config.get("version", "2016"))
        if self.version not in RELEASES:
            raise ValueError(f"ade20k: version must be one of {sorted(RELEASES)}, got {self.version!r}")
        if "path" not in self.config:
            raise ValueError("ade20k: the recipe entry needs a 'path' (the folder holding the extracted release)")
        self.path = Path(self.config["path"]).expanduser()
        self._index = None  # 2016: Index2016
        self._scan = None  # 2021: dict from _scan_2021

    # ------------------------------------------------------------------ layout
    @property
    def release_root(self) -> Path:
        """The release folder (``.../ADE20K_2016_07_26``)."""
        rel = RELEASES[self.version]
        marker = "index_ade20k.mat" if self.version == "2016" else "images/ADE"
        if self.path.name == rel or (self.path / marker).exists():
            return self.path
        return self.path / rel

    @property
    def index_path(self) -> Path:
        return self.release_root / "index_ade20k.mat"

    @property
    def images_root_2021(self) -> Path:
        return self.release_root / "images" / "ADE"

    def check(self) -> None:
        if self.version == "2016":
            if not self.index_path.is_file():
                raise SourceMissingError(how_to_get("2016", self.path))
        elif not self.images_root_2021.is_dir():
            raise SourceMissingError(how_to_get("2021", self.path))

    # ------------------------------------------------------------------ 2016
    def index(self):
        if self._index is None:
            self.check()
            self._index = load_index(self.index_path)
        return self._index

    def _scene_codes_2016(self) -> dict:
        names = sorted({s for s in self.index().scenes if s and not s.startswith("~")})
        return {n: i + 1 for i, n in enumerate(names)}

    def _image_path_2016(self, folder: str, filename: str) -> Path:
        parts = folder.replace("\\", "/").split("/")
        if "images" in parts:
            parts = parts[parts.index("images"):]
        return self.release_root.joinpath(*parts, filename)

    # ------------------------------------------------------------------ 2021
    def scan(self) -> dict:
        """Parse every JSON once (parent process): names per code, scenes, per-image presence."""
        if self._scan is not None:
            return self._scan
        from ...progress import progress

        from .release2021 import find_annotations, read_annotation

        self.check()
        root = self.images_root_2021
        names: dict = {}
        conflicts = 0
        scenes: dict = {}
        presence: Counter = Counter()
        bad: dict = {}
        for rel in progress(find_annotations(root), self.config.get("quiet", True), desc="ade20k json", unit="file"):
            try:
                ann = read_annotation(root / rel)
            except ValueError as e:
                bad[rel] = str(e)
                continue
            scenes[rel] = ann.scene
            for level, codes in ann.levels.items():
                cat = "object" if level == 0 else "part"
                for code, name in codes.items():
                    if names.setdefault(code, name) != name:
                        conflicts += 1
                for code in set(codes):
                    presence[(cat, code)] += 1
        if conflicts:
            log.warning("ade20k 2021: %d object(s) name a class differently from its first JSON; the first name is used", conflicts)
        scene_names = sorted({s for s in scenes.values() if s})
        scene_codes = {n: i + 1 for i, n in enumerate(scene_names)}
        # one image per object per category: images with an object AND a part of the same class count twice, once each
        self._scan = {"names": names, "scenes": scenes, "scene_codes": scene_codes,
                      "presence": dict(presence), "bad": bad}
        pkl = self.release_root / "index_ade20k.pkl"
        if pkl.is_file():
            self._apply_pickle(pkl)
        return self._scan

    def _apply_pickle(self, pkl: Path) -> None:
        """Prefer the pickle's object names when they agree with the JSON numbering."""
        from .release2021 import load_index_pickle, names_offset

        data = load_index_pickle(pkl)
        objectnames = [str(n) for n in data.get("objectnames", [])]
        sample = dict(list(self._scan["names"].items())[:50])
        k = names_offset(objectnames, sample) if objectnames else None
        if k is None:
            log.warning("%s: its objectnames do not match the JSON name_ndx numbering; using the JSON names", pkl)
            return
        for code in list(self._scan["names"]):
            if 0 <= code - k < len(objectnames):
                self._scan["names"][code] = objectnames[code - k]

    # ------------------------------------------------------------------ Source API
    def vocabulary(self) -> dict:
        if self.version == "2016":
            idx = self.index()
            objs = {i + 1: (n,) for i, n in enumerate(idx.objectnames) if n.strip() not in VOID_NAMES}
            scenes = {c: (n,) for n, c in self._scene_codes_2016().items()}
        else:
            s = self.scan()
            objs = {c: (n,) for c, n in s["names"].items() if n.strip() not in VOID_NAMES}
            scenes = {c: (n,) for n, c in s["scene_codes"].items()}
        return {"object": dict(objs), "part": dict(objs), "scene": scenes}

    def split_names(self, category: str, name: str) -> tuple:
        """ADE20K names are comma lists ('column, pillar'); scenes are one name."""
        if category == "scene":
            return (name,)
        return tuple(dict.fromkeys(p.strip() for p in re.split(r",\s*", name) if p.strip()))

    def records(self) -> list:
        out = []
        if self.version == "2016":
            idx = self.index()
            codes = self._scene_codes_2016()
            absent = 0
            for fn, folder, scene in zip(idx.filenames, idx.folders, idx.scenes):
                path = self._image_path_2016(folder, fn)
                if not path.is_file():
                    absent += 1
                    continue
                rel = path.relative_to(self.release_root).as_posix()
                out.append(ImageRecord(Path(fn).stem, {"image": rel, "scene": codes.get(scene, 0)}))
            if absent:
                log.warning("ade20k: %d of %d index rows have no image under %s; they are left out (partial copy?)",
                            absent, len(idx), self.release_root / "images")
            self.absent_images = absent
            return out
        s = self.scan()
        for rel, why in s["bad"].items():
            log.warning("ade20k 2021: skipping %s", why)
        for rel, scene in s["scenes"].items():
            out.append(ImageRecord(Path(rel).stem, {"json": rel, "scene": s["scene_codes"].get(scene, 0)}))
        return out

    def _void_codes(self) -> np.ndarray:
        if self.version == "2016":
            names = self.index().objectnames
            return np.array([i + 1 for i, n in enumerate(names) if n.strip() in VOID_NAMES], dtype=np.int64)
        return np.array([c for c, n in self.scan()["names"].items() if n.strip() in VOID_NAMES], dtype=np.int64)

    def resolve(self, record: ImageRecord) -> Resolved:
        if self.version == "2016":
            img_path = self.release_root / record.meta["image"]
            max_class = len(self.index().objectnames)
            expected_levels = None
            level_codes = None
        else:
            from .release2021 import read_annotation

            json_path = self.images_root_2021 / record.meta["json"]
            try:
                ann = read_annotation(json_path)
            except ValueError as e:
                raise BadSourceItem(str(e)) from None
            img_path = json_path.with_suffix(".jpg")
            max_class = None
            expected_levels = max(ann.levels, default=0)
            level_codes = ann.levels
        stem = img_path.with_suffix("")
        seg_path = stem.parent / f"{stem.name}_seg.png"
        if not seg_path.is_file():
            raise BadSourceItem(f"{seg_path}: segmentation PNG not found (its image or JSON exists)")
        rgb = load_image(img_path)
        shape = rgb.shape[:2]
        obj = load_class_map(seg_path, shape, max_class)
        parts = [load_class_map(p, shape, max_class) for p in part_files(stem)]
        if expected_levels is not None and len(parts) < expected_levels:
            raise BadSourceItem(f"{stem}_parts_{len(parts) + 1}.png: part level {len(parts) + 1} is missing "
                                f"(the JSON has parts down to level {expected_levels})")
        if level_codes is not None:
            for level, plane in enumerate([obj] + parts):
                present = set(np.unique(plane).tolist()) - {0}
                unknown = sorted(present - set(level_codes.get(level, {})))
                if unknown:
                    what = seg_path if level == 0 else Path(f"{stem}_parts_{level}.png")
                    raise BadSourceItem(f"{what}: class {unknown[0]} has no object of part level {level} "
                                        f"in {json_path.name}")
        void = self._void_codes()
        if void.size:
            obj = np.where(np.isin(obj, void), 0, obj)
            parts = [np.where(np.isin(p, void), 0, p) for p in parts]
        scene = int(record.meta.get("scene", 0))
        return Resolved(image=rgb, pixel={"object": [obj], "part": parts},
                        image_level={"scene": [scene] if scene else []}, stacked=frozenset({"part"}))

    def image_level_categories(self) -> frozenset:
        return frozenset({"scene"})

    def plan_statistics(self) -> Optional[dict]:
        """{(category, code): (images, coverage or None)} from the index / JSON metadata alone.

        Scenes: images per scene (coverage = images, each covers its whole image). Objects
        and parts: images holding the class (2016: ``objectPresence`` - ``objectIsPart`` > 0
        for objects, ``objectIsPart`` > 0 for parts; 2021: the JSON part levels); pixel
        coverage is not in the metadata (None).
        """
        out: dict = {}
        vocab = self.vocabulary()
        if self.version == "2016":
            codes = self._scene_codes_2016()
            for scene, n in Counter(self.index().scenes).items():
                if scene in codes:
                    out[("scene", codes[scene])] = (n, float(n))
            counts = presence_counts(self.index_path)
            if counts is not None:
                whole, parts = counts
                for cat, arr in (("object", whole), ("part", parts)):
                    if arr is None:
                        continue
                    for i, n in enumerate(arr.tolist()):
                        if n > 0 and (i + 1) in vocab[cat]:
                            out[(cat, i + 1)] = (int(n), None)
            return out
        s = self.scan()
        for scene, n in Counter(v for v in s["scenes"].values() if v).items():
            out[("scene", s["scene_codes"][scene])] = (n, float(n))
        for (cat, code), n in s["presence"].items():
            if code in vocab[cat]:
                out[(cat, code)] = (n, None)
        return out

    def provenance(self) -> dict:
        d = super().provenance()
        d.update({"version": RELEASES[self.version], "path": str(self.path),
                  "site": SITE, "access": "registration required (manual download)"})
        return d
