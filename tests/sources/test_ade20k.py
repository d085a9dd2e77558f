"""ADE20K source: the real 2016 index with generated images/segmentations, the real 2021 samples, the plan."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REALDATA as REAL  # noqa: E402
INDEX = REAL / "ade20k_2016" / "index_ade20k.mat"
STREET = REAL / "ade20k_2021" / "images" / "ADE" / "training" / "urban" / "street"
ROWS = (0, 2, 20210, 22209)  # two training rows, the first validation row, a scene with '/'


def need(p: Path) -> Path:
    if not p.exists():
        pytest.skip(f"real source files not available: {p} is absent (they are never committed)")
    return p


def encode(classes: np.ndarray) -> np.ndarray:
    """Reference ADE encoding written out by hand: R = (c // 256) * 10, G = c % 256, B = instance."""
    out = np.zeros(classes.shape + (3,), np.uint8)
    out[..., 0] = (classes // 256) * 10
    out[..., 1] = classes % 256
    out[..., 2] = (classes > 0) * 7
    return out


def nearest(plane: np.ndarray, size: int) -> np.ndarray:
    """Plain slow reference of the original's label shrink (docs/format.md, rule 7): corner-aligned,
    output i reads input round(i * (n_in - 1) / (n_out - 1)), halves up."""
    h, w = plane.shape
    out = np.zeros((size, size), plane.dtype)
    for i in range(size):
        for j in range(size):
            out[i, j] = plane[math.floor(i * (h - 1) / (size - 1) + 0.5), math.floor(j * (w - 1) / (size - 1) + 0.5)]
    return out


@pytest.fixture(scope="module")
def index_rows():
    import scipy.io

    ix = scipy.io.loadmat(str(need(INDEX)))["index"][0, 0]
    cell = lambda a, i: str(np.asarray(a[0, i]).ravel()[0]) if np.asarray(a[0, i]).size else ""
    names = [cell(ix["objectnames"], i) for i in range(ix["objectnames"].shape[1])]
    rows = [(cell(ix["filename"], i), cell(ix["folder"], i), cell(ix["scene"], i)) for i in range(ix["filename"].shape[1])]
    return names, rows


def make_2016(tmp: Path, names: list, rows: list, extra=None, picks=ROWS) -> dict:
    """Generated JPEG + seg + parts under the real folder names of the index rows ``picks``
    (default ROWS); returns {stem: (objects, parts, scene)}.

    ``extra``: exact ``objectnames`` entries painted as 3-row bands (rows 10 + 3j, left half) in every image.
    """
    rel = tmp / "ADE20K_2016_07_26"
    rel.mkdir(parents=True)
    (rel / "index_ade20k.mat").symlink_to(INDEX)
    door = names.index(next(n for n in names if n.split(",")[0].strip() == "door")) + 1
    wall = names.index(next(n for n in names if n.split(",")[0].strip() == "wall")) + 1
    rng = np.random.default_rng(0)
    truth = {}
    for k, r in enumerate(picks):
        fn, folder, scene = rows[r]
        d = tmp / folder
        d.mkdir(parents=True, exist_ok=True)
        h, w = 40 + 4 * k, 56
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / fn, quality=95)
        obj = np.zeros((h, w), np.int32)
        obj[:, : w // 2] = wall
        obj[h // 2 :, w // 2 :] = door
        obj[:5, :5] = 300 + k  # a class > 255 (uses R)
        for j, full in enumerate(extra or ()):
            obj[10 + 3 * j : 13 + 3 * j, : w // 2] = names.index(full) + 1
        Image.fromarray(encode(obj)).save(d / fn.replace(".jpg", "_seg.png"))
        parts = []
        if k < 2:
            p1 = np.zeros((h, w), np.int32)
            p1[:10, w // 2 :] = door  # a door that is a part (of a building, say)
            parts.append(p1)
            Image.fromarray(encode(p1)).save(d / fn.replace(".jpg", "_parts_1.png"))
        if k == 0:
            p2 = np.zeros((h, w), np.int32)
            p2[:4, :] = 1000
            parts.append(p2)
            Image.fromarray(encode(p2)).save(d / fn.replace(".jpg", "_parts_2.png"))
        truth[Path(fn).stem] = (obj, parts, scene)
    return truth


def build(recipe_sources, out: Path, **kw):
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "t", "size": 32, "segmentation_size": 16, "min_frequency": 1,
                               "min_coverage": 0.0, "color": False, "sources": recipe_sources})
    return build_store(recipe, out, quiet=True, **kw)


def names_of(store, number: int) -> set:
    lab = store.label_by_number[number]
    return {lab.name, *lab.syns}


def test_2016_build_real_index(tmp_path, index_rows):
    from broden_builder.store.format import decode_label_png
    from broden_builder.store.reader import BrodenStore
    from broden_builder.store.validate import validate_store

    names, rows = index_rows
    assert len(rows) == 22210
    truth = make_2016(tmp_path / "src", names, rows)
    out = tmp_path / "store"
    report = build([{"type": "ade20k", "version": "2016", "path": str(tmp_path / "src")}], out)
    assert report.images == len(ROWS) and not report.skipped
    assert not [p for p in validate_store(out) if p.severity == "error"]
    store = BrodenStore(out)
    by_image = {r.image: r for r in store.rows}
    for stem, (obj, parts, scene) in truth.items():
        row = by_image[f"ade20k/{stem}.jpg"]
        planes = store.pixel_layers(store.rows.index(row), "object")
        assert len(planes) == 1
        want = nearest(obj, 16)
        for cls in np.unique(want):
            mask = want == cls
            got = np.unique(planes[0][mask])
            assert got.size == 1, (stem, cls, got)
            if cls == 0:
                assert got[0] == 0
            else:
                expect = {n.strip().lower() for n in names[cls - 1].split(",")}
                assert names_of(store, int(got[0])) & expect, (stem, cls, names[cls - 1])
        pplanes = store.pixel_layers(store.rows.index(row), "part")
        assert len([p for p in pplanes if p.any()]) == len(parts)
        for lvl, pl in enumerate(parts):
            want = nearest(pl, 16)
            for cls in set(np.unique(want).tolist()) - {0}:
                got = np.unique(pplanes[lvl][want == cls])
                assert got.size == 1 and names_of(store, int(got[0])) & {n.strip().lower() for n in names[cls - 1].split(",")}
        scenes = store.image_labels(store.rows.index(row), "scene")
        expect = scene.lower().replace("/", "-") + "-s"
        assert [store.label(int(s)).name for s in scenes] == [expect]
    door = store.label("door")
    assert set(door.categories) >= {"object", "part"}  # one label, two categories


@pytest.mark.parametrize("damage", ["gap", "size", "index", "noseg"])
def test_2016_bad_items_skipped_and_strict(tmp_path, index_rows, damage):
    from broden_builder.build import BuildError

    names, rows = index_rows
    make_2016(tmp_path / "src", names, rows)
    fn, folder, _ = rows[ROWS[1]]
    d = tmp_path / "src" / folder
    seg = d / fn.replace(".jpg", "_seg.png")
    if damage == "gap":  # level 2 without level 1
        (d / fn.replace(".jpg", "_parts_1.png")).rename(d / fn.replace(".jpg", "_parts_2.png"))
        word = "part level 1 is missing"
    elif damage == "size":
        Image.fromarray(encode(np.ones((10, 10), np.int32))).save(seg)
        word = "10x10"
    elif damage == "index":
        Image.fromarray(encode(np.full(np.asarray(Image.open(d / fn)).shape[:2], len(names) + 5, np.int32))).save(seg)
        word = f"object index {len(names) + 5}"
    else:
        seg.unlink()
        word = "not found"
    src = [{"type": "ade20k", "version": "2016", "path": str(tmp_path / "src")}]
    report = build(src, tmp_path / "store")
    assert report.images == len(ROWS) - 1
    assert len(report.skipped) == 1
    where, why = report.skipped[0]
    assert Path(fn).stem in where + why and word in why
    with pytest.raises(BuildError, match="strict"):
        build(src, tmp_path / "store2", strict=True)


def test_2016_missing_release_says_how_to_get_it(tmp_path):
    from broden_builder.sources import SourceMissingError, get_source_class

    src = get_source_class("ade20k")({"type": "ade20k", "path": str(tmp_path)})
    with pytest.raises(SourceMissingError) as e:
        src.check()
    msg = str(e.value)
    assert "registration" in msg and "ADE20K_2016_07_26/index_ade20k.mat" in msg and "groups.csail.mit.edu" in msg


def test_plan_real_index_468_scenes(index_rows):
    from broden_builder.plan import plan_recipe
    from broden_builder.recipe import recipe_from_dict

    names, rows = index_rows
    # independent oracle: normalised scene names in >= 10 images
    c = Counter(s.lower().replace(" - ", "-").replace("/", "-") for _, _, s in rows if s and not s.startswith("~"))
    assert sum(1 for v in c.values() if v >= 10) == 468
    recipe = recipe_from_dict({"min_frequency": 10, "sources": [{"type": "ade20k", "path": str(INDEX.parent)}]})
    plan = plan_recipe(recipe)
    assert plan.categories["scene"] == 468
    assert "object" in plan.upper_bound and "scene" not in plan.upper_bound
    assert plan.to_json()["categories"]["scene"] == 468


def test_2021_real_samples(tmp_path):
    from broden_builder.store.reader import BrodenStore
    from broden_builder.store.validate import validate_store

    need(STREET)
    root = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "training" / "urban" / "street"
    root.mkdir(parents=True)
    for f in STREET.iterdir():
        (root / f.name).symlink_to(f)
    out = tmp_path / "store"
    report = build([{"type": "ade20k", "version": "2021", "path": str(tmp_path)}], out)
    assert report.images == 3 and not report.skipped
    assert not [p for p in validate_store(out) if p.severity == "error"]
    store = BrodenStore(out)
    for js in sorted(STREET.glob("*.json")):
        ann = json.loads(js.read_text())["annotation"]
        level0 = {o["name_ndx"]: o["name"] for o in ann["object"] if o["parts"]["part_level"] == 0}
        rgb = np.asarray(Image.open(js.with_name(js.stem + "_seg.png")).convert("RGB")).astype(np.int64)
        cls = nearest((rgb[..., 0] // 10) * 256 + rgb[..., 1], 16)
        i = [r.image for r in store.rows].index(f"ade20k/{js.stem}.jpg")
        plane = store.pixel_layers(i, "object")[0]
        for c in np.unique(cls):
            got = np.unique(plane[cls == c])
            assert got.size == 1
            if c == 0:
                assert got[0] == 0
            else:
                assert names_of(store, int(got[0])) & {n.strip().lower() for n in level0[c].split(",")}, (js.name, c)
        assert [store.label(int(s)).name for s in store.image_labels(i, "scene")] == ["street-s"]


def test_2021_json_without_png_is_skipped(tmp_path):
    need(STREET)
    root = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "training" / "urban" / "street"
    root.mkdir(parents=True)
    for f in STREET.iterdir():
        if f.name != "ADE_train_00016900_seg.png":
            (root / f.name).symlink_to(f)
    report = build([{"type": "ade20k", "version": "2021", "path": str(tmp_path)}], tmp_path / "store")
    assert report.images == 2
    assert len(report.skipped) == 1 and "ADE_train_00016900_seg.png" in report.skipped[0][1]


def test_restricted_unpickler_refuses_code(tmp_path):
    import pickle

    from broden_builder.sources.ade20k.release2021 import load_index_pickle

    good = tmp_path / "ok.pkl"
    good.write_bytes(pickle.dumps({"objectnames": ["wall", "door"], "objectPresence": np.eye(2, dtype=np.float32)}))
    assert load_index_pickle(good)["objectnames"] == ["wall", "door"]
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"x": Counter()}))
    with pytest.raises(ValueError, match="refusing"):
        load_index_pickle(bad)
