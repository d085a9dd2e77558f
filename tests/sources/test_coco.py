"""The ``coco`` source offline: COCO-format JSON (polygons, RLE, panoptic) made here, checked against hand-made oracles."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from broden_builder.build import build_store
from broden_builder.recipe import recipe_from_dict
from broden_builder.sources import SourceDataError, get_source_class
from broden_builder.store.reader import BrodenStore
from broden_builder.store.validate import validate_store
from dummy_images import H, W, _save_rgb


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
