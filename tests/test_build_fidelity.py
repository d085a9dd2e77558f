"""The original build's planes, statistics and layout (docs/format.md, rules 2 and 7), with
oracles worked out by hand: the zoom grid, native statistics the same at two output sizes, the
written planes' statistics in build.json, part levels written as _part_1.. with empty ones, a
dropped image-level label written as 0, JPEG quality 75."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from broden_builder.build import build_store
from broden_builder.recipe import recipe_from_dict
from broden_builder.resize import resize_labels
from broden_builder.sources import ImageRecord, Resolved, Source, register_source
from broden_builder.store.validate import validate_store

H, W = 30, 40


def plane_of(i: int) -> tuple:
    """Image i's object plane and part levels at 30 x 40, drawn by hand."""
    obj = np.zeros((H, W), np.int32)
    obj[0:15, :] = 1                      # 'wall': the top half of every image
    if i % 2 == 0:
        obj[20, 21] = 2                   # 'speck': one native pixel in images 0, 2, 4
    lvl1 = np.zeros((H, W), np.int32)
    lvl1[15:30, 0:20] = 3                 # 'leg' part (level 1): the bottom-left quarter
    lvl2 = np.zeros((H, W), np.int32)
    if i in (1, 5):
        lvl2[15:30, 20:40] = 4            # 'knob' (level 2) in images 1 and 5: level 2 is empty elsewhere
    return obj, [lvl1, lvl2]


@register_source("fidelity_test")
class FidelitySource(Source):
    type_name = "fidelity_test"
    prefix = "fid"

    def vocabulary(self) -> dict:
        return {"object": {1: ("wall",), 2: ("speck",)}, "part": {3: ("leg",), 4: ("knob",)},
                "scene": {1: ("street",), 2: ("moon base",)}}

    def records(self) -> list:
        return [ImageRecord(f"im{i}", {"i": i}) for i in range(6)]

    def resolve(self, record: ImageRecord) -> Resolved:
        i = record.meta["i"]
        rng = np.random.default_rng(i)
        obj, parts = plane_of(i)
        scene = [1] if i != 3 else [2]    # 'moon base' in one image: dropped by min_frequency 2
        return Resolved(image=rng.integers(0, 255, (H, W, 3), dtype=np.uint8), pixel={"object": [obj], "part": parts},
                        image_level={"scene": scene}, stacked=frozenset({"part"}))

    def image_level_categories(self) -> frozenset:
        return frozenset({"scene"})


def build(tmp_path: Path, size: int, name: str) -> Path:
    recipe = recipe_from_dict({"size": size, "segmentation_size": size // 2, "min_frequency": 2, "min_coverage": 0.0,
                               "color": False, "sources": [{"type": "fidelity_test"}]})
    out = tmp_path / name
    build_store(recipe, out, quiet=True)
    return out


def rows(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_zoom_grid_is_corner_aligned():
    row = np.tile(np.arange(10), (10, 1))        # every row is 0..9
    assert resize_labels(row, 4)[0].tolist() == [0, 3, 6, 9]  # a centre-sampling resize gives 1 3 6 8
    assert resize_labels(row.T, 4)[:, 0].tolist() == [0, 3, 6, 9]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fidelity")
    return build(tmp, 16, "s16"), build(tmp, 32, "s32")


def test_native_statistics_are_the_same_at_two_sizes(stores):
    a, b = stores
    for table in ("label.csv", "category.csv", "c_object.csv", "c_part.csv", "c_scene.csv"):
        assert rows(a / table) == rows(b / table), table
    labels = {r[1]: r for r in rows(a / "label.csv")[1:]}
    # by hand at 30 x 40 (1200 pixels): wall 600 px in 6 images; speck 1 px in 3 images; leg 300 px in 6
    # images; knob 300 px in images 1, 5; street in 5 images (coverage 1 each); moon base (1 image) dropped
    assert labels["wall"][2:5] == ["object(6)", "6", "3.000000"]
    assert labels["speck"][2:5] == ["object(3)", "3", f"{3 / 1200:f}"]
    assert labels["leg"][2:5] == ["part(6)", "6", "1.500000"]
    assert labels["knob"][2:5] == ["part(2)", "2", "0.500000"]
    assert labels["street-s"][2:5] == ["scene(5)", "5", "5.000000"]
    assert "moon base-s" not in labels
    # numbered by frequency then coverage: wall (6, 3.0), leg (6, 1.5), street (5), speck (3), knob (2)
    assert [r[1] for r in rows(a / "label.csv")[1:]] == ["wall", "leg", "street-s", "speck", "knob"]


def count_written(store: Path) -> dict:
    """The written PNGs counted plainly: (category, number) -> [images, coverage]."""
    out: dict = {}
    for r in rows(store / "index.csv")[1:]:
        header = rows(store / "index.csv")[0]
        cell = dict(zip(header, r))
        for cat in ("object", "part"):
            seen: dict = {}
            for rel in filter(None, cell[cat].split(";")):
                a = np.asarray(Image.open(store / "images" / rel).convert("RGB")).astype(np.int64)
                lab = a[..., 0] + 256 * a[..., 1]
                for n in np.unique(lab[lab > 0]):
                    seen.setdefault(int(n), np.zeros(lab.shape, bool))
                    seen[int(n)] |= lab == n
            for n, mask in seen.items():
                k = out.setdefault((cat, n), [0, 0.0])
                k[0] += 1
                k[1] += mask.mean()
        for n in filter(None, cell["scene"].split(";")):
            if int(n):
                k = out.setdefault(("scene", int(n)), [0, 0.0])
                k[0] += 1
                k[1] += 1.0
    return out


def test_written_statistics_in_build_json_are_checked(stores):
    for store in stores:
        info = json.loads((store / "build.json").read_text())
        got = {(c, int(n)): v for n, cats in info["written_statistics"].items() for c, v in cats.items()}
        want = count_written(store)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k][0] == want[k][0] and got[k][1] == pytest.approx(want[k][1], abs=1e-12)
        assert validate_store(store) == []
    # the one-pixel speck (native column 21, row 20) survives the 30x40 -> 8x8 zoom in no image:
    # rows read round(i * 29 / 7) = 0 4 8 12 17 21 25 29; 20 is not among them
    small = json.loads((stores[0] / "build.json").read_text())["written_statistics"]
    speck = next(r[0] for r in rows(stores[0] / "label.csv")[1:] if r[1] == "speck")
    assert "object" not in small.get(speck, {})
    # a plane changed after the build is caught
    st = stores[1]
    rel = rows(st / "index.csv")[1][rows(st / "index.csv")[0].index("object")].split(";")[0]
    png = st / "images" / rel
    keep = png.read_bytes()
    try:
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
        assert any(p.file == "build.json" and "written_statistics" in p.message for p in validate_store(st))
    finally:
        png.write_bytes(keep)


def test_part_levels_layout_and_dropped_scene_as_zero(stores):
    store = stores[0]
    table = rows(store / "index.csv")
    header = table[0]
    cells = {r[0]: dict(zip(header, r)) for r in table[1:]}
    # every level is written, level 2 empty except in images 1 and 5; one object layer: _object.png
    for i in range(6):
        c = cells[f"fid/im{i}.jpg"]
        assert c["part"] == f"fid/im{i}_part_1.png;fid/im{i}_part_2.png"
        assert c["object"] == f"fid/im{i}_object.png"
        lvl2 = np.asarray(Image.open(store / "images" / f"fid/im{i}_part_2.png").convert("RGB"))
        assert lvl2.any() == (i in (1, 5))
    street = next(r[0] for r in rows(store / "label.csv")[1:] if r[1] == "street-s")
    assert cells["fid/im3.jpg"]["scene"] == "0"      # 'moon base' was dropped by the filter
    assert cells["fid/im0.jpg"]["scene"] == street


def test_images_are_jpeg_quality_75(stores):
    im = Image.open(stores[1] / "images" / "fid" / "im0.jpg")
    # IJG quality 75 scales the standard luminance table by 50%: first entry 16 -> (16 * 50 + 50) // 100 = 8
    assert im.quantization[0][0] == 8 and im.quantization[0][1] == (11 * 50 + 50) // 100
    assert recipe_from_dict({}).jpeg_quality == 75


def test_build_summary_lists_cross_source_merges():
    from broden_builder.build import BuildReport
    from broden_builder.unify import SourceLabel, unify

    v = unify([SourceLabel("ade20k", "object", 1, ("car", "auto"), 20, 2.0, raw=("car, auto",)),
               SourceLabel("pascal", "object", 7, ("car",), 10, 1.0),
               SourceLabel("ade20k", "object", 2, ("tree",), 30, 3.0)], 1, 0.0)
    text = BuildReport(merges=v.merges()).summary()
    # car (20 images) claims car, auto; pascal's car (10) merges into it: one cross-source merge, tree none
    assert "1 label(s) merge labels of different sources" in text
    assert "car: ade20k/object/1 'car, auto' + pascal/object/7 'car'" in text and "tree" not in text
