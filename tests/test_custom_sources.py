"""Custom concept sources (coco, hf, folder, plug-ins): data made here, checked against hand-made oracles."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from broden_builder.build import build_store
from broden_builder.recipe import recipe_from_dict
from broden_builder.sources import SourceDataError, SourceMissingError, get_source_class
from broden_builder.store.reader import BrodenStore
from broden_builder.store.validate import validate_store

H, W = 48, 64


# ----------------------------------------------------------------------------- oracles
def rle_counts(mask: np.ndarray) -> list:
    """Uncompressed COCO RLE written by hand: column-major runs, starting with a run of zeros."""
    flat = mask.T.ravel().astype(np.uint8)  # column-major (Fortran) order
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def rle_string(counts: list) -> str:
    """The compressed COCO RLE string, written by hand from the published scheme:
    counts after the second are stored as differences to the count two back; each value is
    cut into 5-bit groups, low first, a 0x20 bit meaning 'more follows', plus 48 (ASCII)."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((x == 0 and not (ch & 0x10)) or (x == -1 and (ch & 0x10)))
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_decode_by_hand(counts: list, h: int, w: int) -> np.ndarray:
    flat = np.zeros(h * w, bool)
    pos, val = 0, False
    for c in counts:
        flat[pos:pos + c] = val
        pos += c
        val = not val
    return flat.reshape(w, h).T


def polygon_oracle(poly, h, w) -> np.ndarray:
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([tuple(poly[i:i + 2]) for i in range(0, len(poly), 2)], fill=1)
    return np.asarray(im).astype(bool)


def _save_rgb(path: Path, h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


# ----------------------------------------------------------------------------- COCO
def make_coco(tmp: Path, n_images: int = 3, extra_anns=(), extra_images=()):
    """A COCO instances file: polygons, uncompressed and compressed RLE, a crowd region, overlaps."""
    big = np.zeros((H, W), bool)
    big[4:40, 6:50] = True                      # 'dog', uncompressed RLE, large
    small = np.zeros((H, W), bool)
    small[10:20, 20:30] = True                  # 'cat', compressed RLE, inside dog: must stay visible
    crowd = np.zeros((H, W), bool)
    crowd[40:47, 0:20] = True                   # 'person' crowd region
    tri = [40.0, 2.0, 62.0, 10.0, 52.0, 30.0]   # 'kite' polygon, overlaps dog
    images, anns = [], []
    for i in range(n_images):
        _save_rgb(tmp / "imgs" / f"img{i}.jpg", seed=i)
        images.append({"id": 100 + i, "file_name": f"img{i}.jpg", "height": H, "width": W})
        c_big, c_small, c_crowd = rle_counts(big), rle_counts(small), rle_counts(crowd)
        anns += [
            {"id": 10 * i + 1, "image_id": 100 + i, "category_id": 18, "iscrowd": 0,
             "segmentation": {"counts": c_big, "size": [H, W]}},
            {"id": 10 * i + 2, "image_id": 100 + i, "category_id": 17, "iscrowd": 0,
             "segmentation": {"counts": rle_string(c_small), "size": [H, W]}},
            {"id": 10 * i + 3, "image_id": 100 + i, "category_id": 1, "iscrowd": 1,
             "segmentation": {"counts": c_crowd, "size": [H, W]}},
            {"id": 10 * i + 4, "image_id": 100 + i, "category_id": 38, "iscrowd": 0, "segmentation": [tri]},
        ]
    _save_rgb(tmp / "imgs" / "empty.jpg", seed=99)
    images.append({"id": 999, "file_name": "empty.jpg", "height": H, "width": W})
    images += list(extra_images)
    anns += list(extra_anns)
    cats = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}, {"id": 38, "name": "kite"}]
    f = tmp / "instances.json"
    f.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return f, {"dog": big, "cat": small, "person": crowd, "kite": polygon_oracle(tri, H, W)}


def _near_boundary(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation, binary_erosion

    return binary_dilation(mask) & ~binary_erosion(mask)


def test_rle_helpers_agree_with_each_other():
    m = np.zeros((7, 5), bool)
    m[2:5, 1:4] = True
    assert np.array_equal(rle_decode_by_hand(rle_counts(m), 7, 5), m)


def test_coco_instances_pixelwise(tmp_path):
    f, oracle = make_coco(tmp_path)
    src = get_source_class("coco")({"type": "coco", "annotations": str(f), "images": str(tmp_path / "imgs")})
    src.check()
    vocab = src.vocabulary()["object"]
    name_of = {code: names[0] for code, names in vocab.items()}
    code_of = {v: k for k, v in name_of.items()}
    assert set(code_of) == {"person", "cat", "dog", "kite"}
    recs = src.records()
    assert [r.basename for r in recs] == ["img0", "img1", "img2"]  # the unannotated image is dropped by default
    res = src.resolve(recs[0])
    assert list(res.pixel) == ["object"] and len(res.pixel["object"]) == 1
    plane = res.pixel["object"][0]
    # expected painting: larger first, so by area dog > kite > crowd person > cat (cat stays visible)
    exp = np.zeros((H, W), np.int32)
    areas = {n: m.sum() for n, m in oracle.items()}
    for n in sorted(areas, key=lambda n: -areas[n]):
        exp[oracle[n]] = code_of[n]
    ok = (plane == exp) | _near_boundary(oracle["kite"])  # polygon edges: rasterisers differ by a pixel
    assert ok.all(), f"{(~ok).sum()} pixels differ"
    assert (plane[oracle["cat"]] == code_of["cat"]).all()                 # compressed RLE, exactly
    assert (plane[oracle["person"]] == code_of["person"]).all()           # crowd labelled by default
    interior = oracle["kite"] & ~_near_boundary(oracle["kite"])
    assert (plane[interior] == code_of["kite"]).all()


def test_coco_crowd_unlabeled_keep_empty_and_layers(tmp_path):
    f, oracle = make_coco(tmp_path, n_images=1)
    cfg = {"type": "coco", "annotations": str(f), "images": str(tmp_path / "imgs"), "crowd": "unlabeled",
           "keep_unannotated": True, "layering": "layers"}
    src = get_source_class("coco")(cfg)
    recs = src.records()
    assert sorted(r.basename for r in recs) == ["empty", "img0"]
    code_of = {n[0]: c for c, n in src.vocabulary()["object"].items()}
    res = src.resolve([r for r in recs if r.basename == "img0"][0])
    layers = res.pixel["object"]
    union = {n: np.zeros((H, W), bool) for n in code_of}
    for layer in layers:
        for n, c in code_of.items():
            union[n] |= layer == c
    assert not union["person"].any()                    # crowd left unlabeled
    assert np.array_equal(union["dog"], oracle["dog"])  # nothing painted over: every instance whole
    assert np.array_equal(union["cat"], oracle["cat"])
    assert len(layers) == 2                              # cat and kite overlap dog -> a second layer
    assert not src.resolve([r for r in recs if r.basename == "empty"][0]).pixel


def test_coco_panoptic(tmp_path):
    ids = np.zeros((H, W), np.int64)
    ids[:20] = 5 + 256 * 3          # segment id 773: 'sky-other-merged' (stuff)
    ids[20:, 10:30] = 70000         # segment id 70000 uses the B channel: 'dog'
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    (tmp_path / "pan").mkdir()
    Image.fromarray(rgb).save(tmp_path / "pan" / "a.png")
    _save_rgb(tmp_path / "imgs" / "a.jpg")
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
            "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
                {"id": 773, "category_id": 187, "iscrowd": 0}, {"id": 70000, "category_id": 18, "iscrowd": 0}]}],
            "categories": [{"id": 18, "name": "dog", "isthing": 1}, {"id": 187, "name": "sky-other-merged", "isthing": 0}]}
    f = tmp_path / "panoptic.json"
    f.write_text(json.dumps(data))
    src = get_source_class("coco")({"type": "coco", "annotations": str(f), "images": str(tmp_path / "imgs"),
                                    "panoptic_masks": str(tmp_path / "pan"), "stuff_category": "material"})
    voc = src.vocabulary()
    assert [n[0] for n in voc["object"].values()] == ["dog"] and [n[0] for n in voc["material"].values()] == ["sky"]
    res = src.resolve(src.records()[0])
    dog = res.pixel["object"][0]
    sky = res.pixel["material"][0]
    assert np.array_equal(dog > 0, ids == 70000) and np.array_equal(sky > 0, ids == 773)
    # an id in the PNG that segments_info does not name is an error naming the PNG
    ids[0, 0] = 4242
    Image.fromarray(np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)).save(tmp_path / "pan" / "a.png")
    with pytest.raises(SourceDataError, match=r"a\.png.*segment id 4242"):
        get_source_class("coco")({"type": "coco", "annotations": str(f), "images": str(tmp_path / "imgs"),
                                  "panoptic_masks": str(tmp_path / "pan")}).resolve(src.records()[0])


def test_coco_build_end_to_end(tmp_path):
    f, _ = make_coco(tmp_path, n_images=4)
    recipe = recipe_from_dict({"name": "c", "size": 32, "segmentation_size": 16, "min_frequency": 1, "min_coverage": 0,
                               "color": False, "sources": [{"type": "coco", "annotations": str(f), "images": str(tmp_path / "imgs")}]})
    build_store(recipe, tmp_path / "store", quiet=True)
    assert validate_store(tmp_path / "store") == []
    st = BrodenStore(tmp_path / "store")
    assert len(st) == 4 and st.categories == ["object"]
    assert {l.name for l in st.labels} == {"person", "cat", "dog", "kite"}
    assert all(l.frequency == 4 for l in st.labels)


@pytest.mark.parametrize("case, pattern", [
    ("missing_image_file", r"instances\.json: image id 7 names 'gone\.jpg', but .*gone\.jpg does not exist"),
    ("unknown_image_id", r"instances\.json: annotations\[12\] \(id 555\) references image_id 4040"),
    ("short_polygon", r"instances\.json: annotations\[12\] \(id 556\) polygon 0 has 2 point\(s\); a polygon needs at least 3"),
])
def test_coco_bad_input(tmp_path, case, pattern):
    extra_anns, extra_images = [], []
    if case == "missing_image_file":
        extra_images = [{"id": 7, "file_name": "gone.jpg", "height": H, "width": W}]
        extra_anns = [{"id": 554, "image_id": 7, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}]
    elif case == "unknown_image_id":
        extra_anns = [{"id": 555, "image_id": 4040, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}]
    else:
        extra_anns = [{"id": 556, "image_id": 100, "category_id": 1, "segmentation": [[1, 1, 5, 1]]}]
    f, _ = make_coco(tmp_path, n_images=3, extra_anns=extra_anns, extra_images=extra_images)
    recipe = recipe_from_dict({"size": 32, "sources": [{"type": "coco", "annotations": str(f), "images": str(tmp_path / "imgs")}]})
    with pytest.raises(SourceDataError, match=pattern):
        build_store(recipe, tmp_path / "store", quiet=True)
    assert not (tmp_path / "store" / "index.csv").exists()


# ----------------------------------------------------------------------------- folder
def make_folder(tmp: Path, n: int = 6, names="value,name\n1,star\n2,moon;crescent\n", bad_value=None):
    (tmp / "masks").mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        _save_rgb(tmp / "images" / f"f{i}.png", seed=i)
        m = np.zeros((H, W), np.uint8)
        m[5:25, 5:25] = 1
        m[30:40, 30 + i:50] = 2
        if bad_value is not None and i == n - 1:
            m[0, 0] = bad_value
        Image.fromarray(m).save(tmp / "masks" / f"f{i}.png")
        truth[f"f{i}"] = m
    (tmp / "labels.csv").write_text(names)
    return truth


def test_folder_masks_pixelwise(tmp_path):
    truth = make_folder(tmp_path)
    src = get_source_class("folder")({"type": "folder", "images": str(tmp_path / "images"), "masks": str(tmp_path / "masks"),
                                      "labels": str(tmp_path / "labels.csv"), "category": "shape"})
    voc = src.vocabulary()["shape"]
    assert sorted(voc.values()) == [("moon", "crescent"), ("star",)]
    code = {n[0]: c for c, n in voc.items()}
    for rec in src.records():
        plane = src.resolve(rec).pixel["shape"][0]
        m = truth[rec.basename]
        assert np.array_equal(plane == code["star"], m == 1) and np.array_equal(plane == code["moon"], m == 2)
        assert np.array_equal(plane == 0, m == 0)
    assert "shape" not in src.image_level_categories()


def test_folder_unnamed_mask_value_is_an_error(tmp_path):
    make_folder(tmp_path, bad_value=7)
    recipe = recipe_from_dict({"size": 32, "min_frequency": 1, "sources": [{
        "type": "folder", "images": str(tmp_path / "images"), "masks": str(tmp_path / "masks"),
        "labels": str(tmp_path / "labels.csv"), "category": "shape"}]})
    with pytest.raises(SourceDataError, match=r"f5\.png: mask value 7 has no name in .*labels\.csv"):
        build_store(recipe, tmp_path / "store", quiet=True)


def test_folder_image_level_build(tmp_path):
    for i in range(5):
        _save_rgb(tmp_path / "images" / "sub" / f"a{i}.jpg", seed=i)
    rows = ["image,label"] + [f"sub/a{i}.jpg,{'running;jumping' if i % 2 else 'running'}" for i in range(5)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    recipe = recipe_from_dict({"size": 32, "segmentation_size": 16, "min_frequency": 1, "min_coverage": 0, "color": False,
                               "sources": [{"type": "folder", "images": str(tmp_path / "images"),
                                            "labels": str(tmp_path / "labels.csv"), "category": "action"}]})
    build_store(recipe, tmp_path / "store", quiet=True)
    assert validate_store(tmp_path / "store") == []
    st = BrodenStore(tmp_path / "store")
    assert st.categories == ["action"] and st.image_level_categories == {"action"}
    run, jump = st.label("running").number, st.label("jumping").number
    got = {r.image: sorted(st.image_labels(r.index, "action")) for r in st.rows}
    want = {f"folder/sub/a{i}.jpg": sorted([run, jump] if i % 2 else [run]) for i in range(5)}
    assert got == want


# ----------------------------------------------------------------------------- Hugging Face
def test_hf_saved_dataset_masks_and_labels(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    imgs, masks, truth, scenes = [], [], [], []
    for i in range(6):
        imgs.append(Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)))
        m = np.zeros((H, W), np.uint8)
        m[: 10 + 4 * i] = 1
        m[30:, 40:] = 2
        m[0, :] = 255                      # an 'ignore' value, declared unlabeled below
        masks.append(Image.fromarray(m))
        truth.append(m)
        scenes.append(i % 2)
    feats = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(),
                               "scene": datasets.ClassLabel(names=["beach", "forest"])})
    ds = datasets.Dataset.from_dict({"image": imgs, "mask": masks, "scene": scenes}, features=feats)
    ds.save_to_disk(str(tmp_path / "saved"))
    common = {"type": "hf", "dataset": str(tmp_path / "saved"), "split": "train"}
    src = get_source_class("hf")({**common, "mask_column": "mask", "names": {1: "sky", 2: "car"}, "unlabeled": [0, 255]})
    src.check()
    code = {n[0]: c for c, n in src.vocabulary()["object"].items()}
    for rec, m in zip(src.records(), truth):
        plane = src.resolve(rec).pixel["object"][0]
        assert np.array_equal(plane == code["sky"], m == 1) and np.array_equal(plane == code["car"], m == 2)
        assert np.array_equal(plane == 0, (m == 0) | (m == 255))
    # a value with no name (255 not declared unlabeled) names the dataset and the row
    bad = get_source_class("hf")({**common, "mask_column": "mask", "names": ["background", "sky", "car"]})
    with pytest.raises(SourceDataError, match=r"saved \(split train\): row 0 column 'mask': mask value 255 has no name"):
        bad.resolve(bad.records()[0])
    # image-level labels from the ClassLabel, through a whole build
    recipe = recipe_from_dict({"size": 32, "segmentation_size": 16, "min_frequency": 1, "min_coverage": 0, "color": False,
                               "sources": [{**common, "label_column": "scene", "category": "scene"}]})
    build_store(recipe, tmp_path / "store", quiet=True)
    assert validate_store(tmp_path / "store") == []
    st = BrodenStore(tmp_path / "store")
    names = [st.label_by_number[st.image_labels(r.index, "scene")[0]].name for r in sorted(st.rows, key=lambda r: r.image)]
    assert names == ["beach-s", "forest-s"] * 3


def test_hf_parquet_and_unreachable_hub_id(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 6), (i * 40, 0, 0)) for i in range(3)],
                                     "tag": ["a", "b", "a"]}, features=datasets.Features({"image": datasets.Image(), "tag": datasets.Value("string")}))
    ds.to_parquet(str(tmp_path / "d.parquet"))
    src = get_source_class("hf")({"type": "hf", "dataset": str(tmp_path / "d.parquet"), "label_column": "tag", "category": "tag"})
    src.check()
    assert sorted(src.vocabulary()["tag"].values()) == [("a",), ("b",)]
    res = src.resolve(src.records()[1])
    assert res.image.shape == (6, 8, 3) and [src.vocabulary()["tag"][c] for c in res.image_level["tag"]] == [("b",)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    hub = get_source_class("hf")({"type": "hf", "dataset": "someone/not-cached-anywhere", "mask_column": "m"})
    with pytest.raises(SourceMissingError, match=r"someone/not-cached-anywhere.*give a local path"):
        hub.check()


# ----------------------------------------------------------------------------- plug-in
PLUGIN = '''
import numpy as np
from broden_builder.sources import ImageRecord, Resolved, Source


class StripesSource(Source):
    """Half the image is 'stripe', the other half unlabeled."""

    type_name = "stripes"

    def vocabulary(self):
        return {"pattern": {1: ("stripe", "band")}}

    def image_level_categories(self):
        return frozenset()

    def records(self):
        return [ImageRecord(f"s{i}", {"i": i}) for i in range(int(self.config.get("count", 4)))]

    def resolve(self, record):
        rgb = np.full((20, 20, 3), 10 * record.meta["i"], np.uint8)
        lab = np.zeros((20, 20), np.int32)
        lab[:, :10] = 1
        return Resolved(image=rgb, pixel={"pattern": [lab]})
'''


def test_plugin_through_entry_point(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "stripes_plugin").mkdir(parents=True)
    (pkg / "stripes_plugin" / "__init__.py").write_text(PLUGIN)
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "stripes-plugin"
        version = "0.0.1"
        [project.entry-points."broden_builder.sources"]
        stripes = "stripes_plugin:StripesSource"
        '''))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(pkg)], check=True)
    sys.path.insert(0, str(target))
    try:
        import importlib

        importlib.invalidate_caches()
        from broden_builder import sources as reg

        assert "stripes" in reg.available_sources()
        cls = get_source_class("stripes")
        assert cls.__name__ == "StripesSource"
        recipe = recipe_from_dict({"size": 16, "segmentation_size": 8, "min_frequency": 1, "min_coverage": 0, "color": False,
                                   "sources": [{"type": "stripes", "count": 4}]})
        build_store(recipe, tmp_path / "store", quiet=True)
        assert validate_store(tmp_path / "store") == []
        st = BrodenStore(tmp_path / "store")
        lab = st.label("band")
        assert lab.name == "stripe" and lab.categories == {"pattern": 4} and abs(lab.coverage - 2.0) < 1e-6
        layer = st.pixel_layers(0, "pattern")[0]
        assert (layer[:, :4] == lab.number).all() and (layer[:, 4:] == 0).all()
    finally:
        sys.path.remove(str(target))
        reg._REGISTRY.pop("stripes", None)
        for m in [m for m in sys.modules if m.startswith("stripes_plugin")]:
            del sys.modules[m]
