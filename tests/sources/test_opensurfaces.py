"""OpenSurfaces source: release JSON generated in its real format, photos served on 127.0.0.1."""
from __future__ import annotations

import math

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from http_server import http_server  # noqa: F401  (fixture)

from conftest import REALDATA as REAL  # noqa: E402
COLORS = REAL / "opensurfaces" / "label-substance-colors.csv"
W, H = 60, 40
#: The label image the release script draws for a W x H photo: 1,024 rows, int(1024 * aspect_ratio)
#: columns (docs/format.md, "OpenSurfaces label planes"), not the photo's own W x H.
LH = 1024
LW = int(LH * (W / H))


def px(box) -> tuple:
    """Pixels a filled rectangle ``rect(*box)`` covers in the LW x LH label image, by the release
    script's rule: each vertex (x, y) fraction lands on (int(x * LW), int(y * LH)), edges included."""
    x0, y0, x1, y1 = box
    return (slice(int((y0 / H) * LH), int((y1 / H) * LH) + 1), slice(int((x0 / W) * LW), int((x1 / W) * LW) + 1))


def real_table() -> list:
    if not COLORS.is_file():
        pytest.skip(f"real source files not available: {COLORS} is absent (they are never committed)")
    with open(COLORS, newline="") as f:
        return list(csv.DictReader(f))


def fixture(model: str, rows: list) -> list:
    return [{"model": model, "pk": r["pk"], "fields": {k: v for k, v in r.items() if k != "pk"}} for r in rows]


def rect(x0, y0, x1, y1) -> tuple:
    """vertices / triangles strings of an axis-aligned rectangle (fractions of W, H)."""
    v = [x0 / W, y0 / H, x1 / W, y0 / H, x1 / W, y1 / H, x0 / W, y1 / H]
    return ",".join(repr(t) for t in v), "0,1,2,0,2,3"


def shape(pk, photo, substance, box, nv, special=False, hq=True) -> dict:
    v, t = rect(*box)
    return {"pk": pk, "photo": photo, "substance": substance, "name": 1, "vertices": v, "triangles": t,
            "num_vertices": nv, "special": special, "high_quality": hq, "planar": False, "planar_score": 0,
            "bsdf_wd": None, "rectified_normal": None}


def photo(pk, correct=True, special=False) -> dict:
    return {"pk": pk, "image_orig": f"photos-orig/{pk}.jpg", "aspect_ratio": W / H, "scene_category": 1,
            "scene_category_correct": correct, "scene_category_correct_score": 1.0, "special": special,
            "num_vertices": 10, "whitebalanced": True, "whitebalanced_score": 1.0, "fov": 50.0,
            "flickr_user": None, "flickr_id": None, "license": None}


def make_release(root: Path, www: Path, extra_shapes=()) -> dict:
    """The release tables under root/opensurfaces/, photos under www; returns the oracle material maps.

    ``extra_shapes`` (``shape(...)`` dicts) are added to the table; the returned oracle leaves them out.
    """
    table = real_table()
    subs = [{"pk": int(r["substance_id"]), "name": r["substance_name"], "fail": False} for r in table]
    subs.append({"pk": 99, "name": "Aaa rejected", "fail": True})
    red = {int(r["substance_id"]): int(r["red_color"]) for r in table}
    carpet, wood, glass = 17, 43, 6  # Carpet/rug, Wood, Glass
    photos = [photo(101), photo(102), photo(103), photo(104, correct=False), photo(105, special=True), photo(106)]
    shapes = [
        shape(1, 101, carpet, (0, 0, 29, 39), nv=4),          # drawn after shape 2 (fewer vertices)
        shape(2, 101, wood, (10, 10, 50, 30), nv=9),
        shape(3, 101, glass, (40, 0, 59, 5), nv=4, special=True),   # dropped: special
        shape(4, 101, glass, (40, 30, 59, 39), nv=4, hq=False),     # dropped: low quality
        shape(5, 102, wood, (0, 0, 59, 39), nv=8),
        shape(6, 102, 99, (5, 5, 20, 20), nv=4),                # failed substance: drawn as 0
        shape(7, 103, glass, (30, 20, 59, 39), nv=4),
        shape(8, 104, glass, (0, 0, 59, 39), nv=4),             # photo dropped
    ] + list(extra_shapes)
    d = root / "opensurfaces"
    d.mkdir(parents=True)
    (d / "photos.photo.json").write_text(json.dumps(fixture("photos.photo", photos)))
    (d / "shapes.shapesubstance.json").write_text(json.dumps(fixture("shapes.shapesubstance", subs)))
    (d / "shapes.materialshape.json").write_text(json.dumps(fixture("shapes.materialshape", shapes)))
    rng = np.random.default_rng(1)
    (www / "photos-orig").mkdir(parents=True)
    for pk in (101, 102, 103, 104, 105):  # 106 is missing on the server
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(www / "photos-orig" / f"{pk}.jpg")
    oracle = {pk: np.zeros((LH, LW), np.int32) for pk in (101, 102, 103)}
    oracle[101][px((10, 10, 50, 30))] = red[wood]
    oracle[101][px((0, 0, 29, 39))] = red[carpet]
    oracle[102][px((0, 0, 59, 39))] = red[wood]
    oracle[102][px((5, 5, 20, 20))] = 0
    oracle[103][px((30, 20, 59, 39))] = red[glass]
    return {"oracle": oracle, "red": red, "subs": subs}


def test_substance_numbering_matches_real_table(tmp_path):
    from broden_builder.sources.opensurfaces.release import material_names, substance_reds

    table = real_table()
    subs = [{"pk": int(r["substance_id"]), "name": r["substance_name"], "fail": False} for r in table]
    subs.insert(3, {"pk": 77, "name": "Bamboo", "fail": True})
    assert substance_reds(subs) == {int(r["substance_id"]): int(r["red_color"]) for r in table}
    assert material_names("Carpet/rug") == ("carpet", "rug")
    assert material_names("Plastic - clear") == ("plastic-clear",)


def build(root: Path, www_url: str, out: Path, **kw):
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "t", "size": 32, "segmentation_size": 16, "min_frequency": 1,
                               "min_coverage": 0.0, "color": False,
                               "sources": [{"type": "opensurfaces", "path": str(root), "photos_url": www_url,
                                            "download_workers": 2}]})
    return build_store(recipe, out, quiet=True, **kw)


def nearest(plane: np.ndarray, size: int) -> np.ndarray:
    """The original's label shrink by hand: corner-aligned, input index round(i * (n_in - 1) / (n_out - 1))."""
    h, w = plane.shape
    return np.array([[plane[math.floor(i * (h - 1) / (size - 1) + 0.5), math.floor(j * (w - 1) / (size - 1) + 0.5)]
                      for j in range(size)] for i in range(size)])


def test_build_fetches_photos_renders_materials(tmp_path, http_server, monkeypatch):
    from broden_builder.build import BuildError
    from broden_builder.store.reader import BrodenStore
    from broden_builder.store.validate import validate_store

    monkeypatch.delenv("BRODEN_MIRROR", raising=False)
    root = tmp_path / "os"
    info = make_release(root, http_server.root)
    out = tmp_path / "store"
    report = build(root, http_server.base_url, out)
    # photos 104 (wrong scene) and 105 (special) are not kept; 106 fails to download and is skipped
    assert report.images == 3
    assert [(w.split("/")[-1], "download" in why) for w, why in report.skipped] == [("106.jpg", True)]
    assert sorted(p.name for p in (root / "photos").iterdir()) == ["101.jpg", "102.jpg", "103.jpg"]
    assert not http_server.requests_for("/photos-orig/104.jpg")
    assert not [p for p in validate_store(out) if p.severity == "error"]
    store = BrodenStore(out)
    names = {v: {n.strip().lower().replace(" - ", "-") for n in k.split("/")}
             for k, v in ((s["name"], info["red"].get(s["pk"])) for s in info["subs"]) if v}
    for i, row in enumerate(store.rows):
        pk = int(row.image.split("/")[-1][:-4])
        want = nearest(info["oracle"][pk], 16)
        got = store.pixel_layers(i, "material")
        plane = got[0] if got else np.zeros((16, 16), int)
        for r in np.unique(want):
            vals = np.unique(plane[want == r])
            assert vals.size == 1, (pk, r, vals)
            if r == 0:
                assert vals[0] == 0
            else:
                lab = store.label_by_number[int(vals[0])]
                assert {lab.name, *lab.syns} & names[r], (pk, r, lab)
    carpet = store.label("carpet")  # 'Carpet/rug': one label, the other names synonyms
    # the original synonym function: common_names['carpet'] = [carpet, carpeting] comes first
    assert [carpet.name, *carpet.syns] == ["carpet", "carpeting", "rug"] and list(carpet.categories) == ["material"]
    # a second run reuses the fetched photos (no new request for them) and retries only the failed one
    n_before = len(http_server.requests_for("/photos-orig/101.jpg"))
    report2 = build(root, http_server.base_url, tmp_path / "store2")
    assert len(http_server.requests_for("/photos-orig/101.jpg")) == n_before
    assert report2.images == 3 and len(report2.skipped) == 1
    with pytest.raises(BuildError, match="strict"):
        build(root, http_server.base_url, tmp_path / "store3", strict=True)


def test_missing_release_message(tmp_path):
    from broden_builder.sources import SourceMissingError, get_source_class

    src = get_source_class("opensurfaces")({"type": "opensurfaces", "path": str(tmp_path)})
    with pytest.raises(SourceMissingError, match="photos.photo.json"):
        src.check()


def test_plan_counts_from_shapes(tmp_path, http_server):
    from broden_builder.sources import get_source_class

    root = tmp_path / "os"
    info = make_release(root, http_server.root)
    src = get_source_class("opensurfaces")({"type": "opensurfaces", "path": str(root), "download": False})
    stats = src.plan_statistics()
    red = info["red"]
    assert stats == {("material", red[17]): (1, None), ("material", red[43]): (2, None), ("material", red[6]): (1, None)}
