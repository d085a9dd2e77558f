"""A Hugging Face dataset whose image column is nested lists declared uint16 (``List(List(Value('uint16')))``,
what ``Dataset.from_dict`` makes of uint16 arrays) is decoded at 16 bits, not refused as int64.

Oracle by hand: 16-bit value 40000 -> round(40000 * 255 / 65535) = 156 (a flat JPEG reads back
within 1); float32 0.25 -> round(0.25 * 255) = 64.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")


@pytest.mark.parametrize("image, want", [
    (np.full((12, 16), 40000, np.uint16), 156),
    (np.full((12, 16, 3), 40000, np.uint16), 156),
    (np.full((12, 16, 3), 0.25, np.float32), 64),
])
def test_hf_list_columns_decode_with_their_declared_dtype(tmp_path, image, want):
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    ds = datasets.Dataset.from_dict({"image": [image, image], "mask": [np.ones((12, 16), np.uint8)] * 2})
    ds.save_to_disk(str(tmp_path / "ds"))
    recipe = recipe_from_dict({"size": 16, "segmentation_size": 8, "min_frequency": 1, "min_coverage": 0,
                               "color": False, "sources": [{"type": "hf", "dataset": str(tmp_path / "ds"),
                                                            "mask_column": "mask", "names": ["bg", "thing"],
                                                            "category": "object"}]})
    out = tmp_path / "store"
    build_store(recipe, out, workers=1, quiet=True)
    jpgs = sorted((out / "images").rglob("*.jpg"))
    assert len(jpgs) == 2
    for p in jpgs:
        a = np.asarray(Image.open(p)).astype(int)
        assert np.abs(a - want).max() <= 1, (p, a.min(), a.max())
