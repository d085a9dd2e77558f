"""The original build's last fidelity rules (docs/format.md), each checked against values computed
here from the rule as written there, on data in the sources' exact formats (generated) and, where
the real samples are present, on those too:

- OpenSurfaces label planes are drawn at the release script's 1,024-pixel height ("OpenSurfaces
  label planes"), not at the photo's resolution;
- Pascal-Part frequency is counted per (object class, part) code and summed per name ("Pascal-Part
  codes", rules 2, 4, 5);
- ADE20K part coverage sums the levels ("ADE20K part levels");
- ADE20K 2021 scene folders that are symbolic links are followed, loops skipped with a warning
  ("ADE20K, release 2021");
- ties are numbered by the stated rule, not Python 2's dict order ("Where this project departs").
"""
from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from broden_builder.build import build_store
from broden_builder.recipe import recipe_from_dict
from broden_builder.sources import ImageRecord, Resolved, Source, register_source
from broden_builder.store.reader import BrodenStore

from conftest import REALDATA  # noqa: E402


def build(out: Path, sources: list, min_frequency: int = 1, size: int = 16) -> Path:
    recipe = recipe_from_dict({"size": size, "segmentation_size": size // 2, "min_frequency": min_frequency,
                               "min_coverage": 0.0, "color": False, "sources": sources})
    build_store(recipe, out, quiet=True)
    return out


def label_rows(store: Path, table: str = "label.csv") -> dict:
    """name -> row dict of a store table."""
    with open(store / table, newline="", encoding="utf-8") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def corner_shrink(plane: np.ndarray, size: int) -> np.ndarray:
    """Rule 7 by hand: output index i reads input index floor(i * (n - 1) / (size - 1) + 0.5)."""
    h, w = plane.shape
    rows = [math.floor(i * (h - 1) / (size - 1) + 0.5) for i in range(size)]
    cols = [math.floor(j * (w - 1) / (size - 1) + 0.5) for j in range(size)]
    return plane[np.ix_(rows, cols)]


# --------------------------------------------------------------------------- OpenSurfaces
def _fixture(model: str, rows: list) -> list:
    return [{"model": model, "pk": r["pk"], "fields": {k: v for k, v in r.items() if k != "pk"}} for r in rows]


def _photo(pk: int, ratio: float) -> dict:
    return {"pk": pk, "image_orig": f"orig/{pk}.jpg", "aspect_ratio": ratio, "scene_category": 1,
            "scene_category_correct": True, "scene_category_correct_score": 1.0, "special": False,
            "num_vertices": 4, "whitebalanced": True, "whitebalanced_score": 1.0, "fov": 50.0,
            "flickr_user": None, "flickr_id": None, "license": None}


def _rect_shape(pk: int, photo: int, substance: int, box: tuple) -> dict:
    """A rectangle (x0, y0, x1, y1) given as fractions of width and height, as two triangles."""
    x0, y0, x1, y1 = box
    v = ",".join(repr(t) for t in (x0, y0, x1, y0, x1, y1, x0, y1))
    return {"pk": pk, "photo": photo, "substance": substance, "name": 1, "vertices": v, "triangles": "0,1,2,0,2,3",
            "num_vertices": 4, "special": False, "high_quality": True}


#: Two substances (red 1 = Glass, red 2 = Wood: sorted by name) and the boxes each photo draws.
WOOD_BOX = (0.1, 0.2, 0.7, 0.9)
GLASS_BOX = (0.71, 0.0, 0.72, 0.5)  # a sliver: 1% of the width


def _opensurfaces_release(root: Path, photo_sizes: dict) -> None:
    """A release in its real JSON format (tables at the top of ``root``) with photos already fetched."""
    ratio = 1.5
    (root / "photos").mkdir(parents=True)
    photos, shapes = [], []
    for k, (pk, (w, h)) in enumerate(sorted(photo_sizes.items())):
        assert w / h == ratio
        photos.append(_photo(pk, ratio))
        shapes += [_rect_shape(10 * k + 1, pk, 2, WOOD_BOX), _rect_shape(10 * k + 2, pk, 1, GLASS_BOX)]
        rng = np.random.default_rng(pk)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "photos" / f"{pk}.jpg")
    subs = [{"pk": 1, "name": "Glass", "fail": False}, {"pk": 2, "name": "Wood", "fail": False}]
    (root / "photos.photo.json").write_text(json.dumps(_fixture("photos.photo", photos)))
    (root / "shapes.shapesubstance.json").write_text(json.dumps(_fixture("shapes.shapesubstance", subs)))
    (root / "shapes.materialshape.json").write_text(json.dumps(_fixture("shapes.materialshape", shapes)))


def _release_box(box: tuple, w: int, h: int) -> tuple:
    """The pixels a filled rectangle covers by the release script's rule: vertex (x, y) at
    (int(x * w), int(y * h)), the polygon's edges included."""
    x0, y0, x1, y1 = box
    return slice(int(y0 * h), int(y1 * h) + 1), slice(int(x0 * w), int(x1 * w) + 1)


def test_opensurfaces_labels_drawn_at_release_height(tmp_path):
    sizes = {101: (60, 40), 102: (150, 100)}  # two resolutions, one aspect ratio (1.5)
    root = tmp_path / "os"
    _opensurfaces_release(root, sizes)
    out = build(tmp_path / "store", [{"type": "opensurfaces", "path": str(root), "download": False}])
    # the rule: label images are 1,024 rows by int(1024 * aspect_ratio) = 1536 columns for both photos
    lh, lw = 1024, int(1024 * 1.5)
    oracle = np.zeros((lh, lw), np.int32)
    oracle[_release_box(WOOD_BOX, lw, lh)] = 2
    oracle[_release_box(GLASS_BOX, lw, lh)] = 1  # drawn after wood (equal num_vertices: table order)
    cover = {r: float((oracle == r).sum()) / oracle.size for r in (1, 2)}
    labels = label_rows(out)
    assert labels["wood"]["coverage"] == f"{2 * cover[2]:f}" and labels["wood"]["frequency"] == "2"
    assert labels["glass"]["coverage"] == f"{2 * cover[1]:f}"
    # drawn at the photos' own resolutions instead, the coverage would differ (the sliver most)
    at_photo = 0.0
    for w, h in sizes.values():
        p = np.zeros((h, w), np.int32)
        p[_release_box(GLASS_BOX, w, h)] = 1
        at_photo += float((p == 1).sum()) / p.size
    assert f"{at_photo:f}" != labels["glass"]["coverage"]
    # both stored planes are the 1536 x 1024 plane shrunk by rule 7, whatever the photo's size
    store = BrodenStore(out)
    want = corner_shrink(oracle, 8)
    number = {"glass": store.label("glass").number, "wood": store.label("wood").number}
    for i, _row in enumerate(store.rows):
        plane = store.pixel_layers(i, "material")[0]
        expect = np.select([want == 1, want == 2], [number["glass"], number["wood"]], 0)
        assert np.array_equal(plane, expect)


def test_opensurfaces_bad_aspect_ratio_skips_the_photo(tmp_path):
    root = tmp_path / "os"
    _opensurfaces_release(root, {101: (60, 40), 102: (60, 40)})
    photos = json.loads((root / "photos.photo.json").read_text())
    photos[1]["fields"]["aspect_ratio"] = 0
    (root / "photos.photo.json").write_text(json.dumps(photos))
    recipe = recipe_from_dict({"size": 16, "segmentation_size": 8, "min_frequency": 1, "min_coverage": 0.0,
                               "color": False, "sources": [{"type": "opensurfaces", "path": str(root), "download": False}]})
    report = build_store(recipe, tmp_path / "store", quiet=True)
    assert report.images == 1
    assert len(report.skipped) == 1 and "photo 102" in report.skipped[0][1] and "aspect_ratio" in report.skipped[0][1]


# --------------------------------------------------------------------------- Pascal-Part
def original_part_frequency(ann_dir: Path, readable: dict) -> dict:
    """Part name -> frequency by the original's rule: paint every part of every object, in file order,
    as its (object class, part name) code; count each code once per image it is left visible in; sum
    the codes of one name. ``readable``: raw part name -> readable name (worked out by hand)."""
    freq: dict = {}
    for mat in sorted(ann_dir.glob("*.mat")):
        anno = sio.loadmat(str(mat), squeeze_me=True, struct_as_record=False)["anno"]
        plane = None
        for obj in np.atleast_1d(anno.objects):
            for part in np.atleast_1d(obj.parts):
                mask = np.asarray(part.mask).astype(bool)
                if plane is None:
                    plane = np.full(mask.shape, "", dtype=object)
                plane[mask] = f"{getattr(obj, 'class')}|{readable[str(part.part_name)]}"
        for key in set(np.unique(plane)) - {""} if plane is not None else ():
            name = key.split("|")[1]
            freq[name] = freq.get(name, 0) + 1
    return freq


def _pascal_part_build(tmp_path: Path, root: Path, min_frequency: int) -> dict:
    out = build(tmp_path / "store", [{"type": "pascal", "path": str(root), "categories": ["part"]}],
                min_frequency=min_frequency)
    return {n: int(r["frequency"]) for n, r in label_rows(out).items()}


def test_pascal_part_frequency_per_object_class_generated(tmp_path):
    from test_pascal import make_pascal

    root = tmp_path / "p"
    make_pascal(root, ids=("2008_000001", "2008_000002", "2008_000003"))
    readable = {"head": "head", "lfuleg": "leg", "hair": "hair", "llleg": "leg"}  # from PART2IND's comments
    freq = original_part_frequency(root / "Annotations_Part", readable)
    # by hand: each image shows a cow's head and leg and a person's hair and leg: leg 2 x 3 = 6
    assert freq == {"head": 3, "leg": 6, "hair": 3}
    kept = {n: f for n, f in freq.items() if f >= 5}
    assert _pascal_part_build(tmp_path, root, 5) == kept == {"leg": 6}


def test_pascal_part_frequency_per_object_class_real(tmp_path):
    from test_pascal import HAND_NAMES

    real = REALDATA / "pascal_part"
    if not (real / "part2ind.m").is_file():
        pytest.skip(f"real Pascal-Part files not available under {REALDATA} (set BRODEN_REALDATA)")
    root = tmp_path / "pascal"
    (root / "VOCdevkit" / "VOC2010").mkdir(parents=True)
    shutil.copytree(real / "JPEGImages", root / "VOCdevkit" / "VOC2010" / "JPEGImages")
    shutil.copytree(real / "Annotations_Part", root / "Annotations_Part")
    shutil.copy(real / "part2ind.m", root / "part2ind.m")
    freq = original_part_frequency(root / "Annotations_Part", HAND_NAMES)
    kept = {n: f for n, f in freq.items() if f >= 5}
    assert set(kept) == {"ear", "head", "leg", "neck", "torso"}  # what the original keeps at min_frequency 5
    assert _pascal_part_build(tmp_path, root, 5) == kept


# --------------------------------------------------------------------------- ADE20K 2021
def _encode(classes: np.ndarray) -> np.ndarray:
    """ADE's class encoding: R = (class // 256) * 10, G = class % 256 (B: instances, 0 here)."""
    out = np.zeros(classes.shape + (3,), np.uint8)
    out[..., 0] = (classes // 256) * 10
    out[..., 1] = classes % 256
    return out


def write_ade2021_image(folder: Path, stem: str, scene: list, objects: list, levels: list, seed: int = 0) -> None:
    """One image of the 2021 release: X.jpg, X_seg.png, X_parts_N.png and X.json (``annotation``:
    ``scene``, ``object`` with ``name``, ``name_ndx``, ``parts.part_level``). ``levels[0]`` is the
    object plane, ``levels[N]`` part level N."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = levels[0].shape
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{stem}.jpg")
    Image.fromarray(_encode(levels[0])).save(folder / f"{stem}_seg.png")
    for n, plane in enumerate(levels[1:], 1):
        Image.fromarray(_encode(plane)).save(folder / f"{stem}_parts_{n}.png")
    objs = [{"id": i, "name": name, "name_ndx": code, "parts": {"part_level": level}}
            for i, (name, code, level) in enumerate(objects)]
    (folder / f"{stem}.json").write_text(json.dumps({"annotation": {"filename": f"{stem}.jpg", "scene": scene,
                                                                    "object": objs}}))


H, W = 20, 30


def _street_image(folder: Path, stem: str, seed: int) -> None:
    obj = np.zeros((H, W), np.int64)
    obj[:, :] = 5                       # wall
    lvl1 = np.zeros((H, W), np.int64)
    lvl1[0:10, 0:20] = 7                # knob on level 1: 200 px
    lvl2 = np.zeros((H, W), np.int64)
    lvl2[5:15, 10:30] = 7               # knob on level 2: 200 px, 50 of them over level 1's
    write_ade2021_image(folder, stem, ["outdoor", "urban", "street"],
                        [("wall", 5, 0), ("knob", 7, 1), ("knob", 7, 2)], [obj, lvl1, lvl2], seed)


def test_ade_part_coverage_sums_levels(tmp_path):
    street = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "training" / "urban" / "street"
    for k in range(2):
        _street_image(street, f"ADE_train_{k:08d}", k)
    out = build(tmp_path / "store", [{"type": "ade20k", "version": "2021", "path": str(tmp_path)}])
    # the original: one histogram over both levels divided by one plane: (200 + 200) / 600 per image
    # (counting each pixel once would give 350 / 600)
    knob = label_rows(out)["knob"]
    assert knob["frequency"] == "2" and knob["coverage"] == f"{2 * 400 / 600:f}"
    assert label_rows(out, "c_part.csv")["knob"]["coverage"] == f"{2 * 400 / 600:f}"


def test_ade2021_symlinked_scene_folder_is_followed(tmp_path, caplog):
    release = tmp_path / "ADE20K_2021_17_01"
    urban = release / "images" / "ADE" / "training" / "urban"
    _street_image(urban / "street", "ADE_train_00000001", 1)
    elsewhere = tmp_path / "other_disk" / "highway"
    _street_image(elsewhere, "ADE_train_00000002", 2)
    _street_image(elsewhere, "ADE_train_00000003", 3)
    (urban / "highway").symlink_to(elsewhere, target_is_directory=True)
    (urban / "street" / "loop").symlink_to(urban, target_is_directory=True)  # back up the tree: a loop
    with caplog.at_level(logging.WARNING):
        out = build(tmp_path / "store", [{"type": "ade20k", "version": "2021", "path": str(tmp_path)}])
    store = BrodenStore(out)
    assert sorted(r.image for r in store.rows) == [f"ade20k/ADE_train_0000000{k}.jpg" for k in (1, 2, 3)]
    warned = [r.getMessage() for r in caplog.records if "already read" in r.getMessage()]
    assert len(warned) == 1 and "training/urban/street/loop" in warned[0]


def test_ade2021_real_samples_through_a_symlinked_scene_folder(tmp_path):
    street = REALDATA / "ade20k_2021" / "images" / "ADE" / "training" / "urban" / "street"
    if not street.is_dir():
        pytest.skip(f"real ADE20K 2021 samples not available under {REALDATA} (set BRODEN_REALDATA)")
    urban = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "training" / "urban"
    urban.mkdir(parents=True)
    (urban / "street").symlink_to(street, target_is_directory=True)
    out = build(tmp_path / "store", [{"type": "ade20k", "version": "2021", "path": str(tmp_path)}])
    assert sorted(r.image for r in BrodenStore(out).rows) == sorted(f"ade20k/{p.stem}.jpg" for p in street.glob("*.json"))


# --------------------------------------------------------------------------- ties
@register_source("tie_rule_test")
class TieSource(Source):
    """Codes 1 'zebra' and 2 'apple' cover the same pixels of the same images; 'mast' is an object in
    two images and a part in two others (a tie between its categories)."""

    type_name = "tie_rule_test"
    prefix = "tie"

    def vocabulary(self) -> dict:
        return {"object": {1: ("zebra",), 2: ("apple",), 3: ("mast",)}, "part": {4: ("mast",)}}

    def records(self) -> list:
        return [ImageRecord(f"im{i}", {"i": i}) for i in range(4)]

    def resolve(self, record: ImageRecord) -> Resolved:
        i = record.meta["i"]
        obj = np.zeros((10, 10), np.int32)
        obj[0:5, 0:5] = 1
        obj[5:10, 5:10] = 2
        part = np.zeros((10, 10), np.int32)
        if i < 2:
            obj[0:2, 8:10] = 3
        else:
            part[0:2, 8:10] = 4
        img = np.random.default_rng(i).integers(0, 255, (10, 10, 3), dtype=np.uint8)
        return Resolved(image=img, pixel={"object": [obj], "part": [part]})


def test_ties_numbered_by_the_stated_rule(tmp_path):
    out = build(tmp_path / "store", [{"type": "tie_rule_test"}])
    labels = label_rows(out)
    # zebra and apple: 4 images, coverage 1.0 each: a tie of frequency and coverage (rule 5).
    # The stated rule: rule 4's visit order, ascending (source, category, code): zebra (1) before apple (2)
    assert (labels["zebra"]["frequency"], labels["zebra"]["coverage"]) == (labels["apple"]["frequency"],
                                                                           labels["apple"]["coverage"])
    assert int(labels["zebra"]["number"]) < int(labels["apple"]["number"])
    c_obj = label_rows(out, "c_object.csv")
    assert int(c_obj["zebra"]["code"]) < int(c_obj["apple"]["code"])  # c_object.csv: by global number
    assert labels["mast"]["category"] == "object(2);part(2)"  # a category cell's tie: by category name
