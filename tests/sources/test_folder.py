"""The ``folder`` source offline: a folder of images with mask PNGs or image-level labels made here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from broden_builder.build import build_store
from broden_builder.recipe import recipe_from_dict
from broden_builder.sources import SourceDataError, get_source_class
from broden_builder.store.reader import BrodenStore
from broden_builder.store.validate import validate_store
from dummy_images import H, W, _save_rgb


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
