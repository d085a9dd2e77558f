"""A built store's Pascal-Part planes against the original's painter-order plane, computed plainly here.

The original painted every part of every object of a Pascal-Part annotation in file order
(later over earlier) into one layer, then shrank it with scipy's zoom(order=0) on its
corner-aligned grid (docs/format.md, rule 7). The reference below does both by hand from
the real .mat files of the real-sample folder (never committed); names come from part2ind.m's comments read by hand
(test_pascal.HAND_NAMES).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from conftest import REALDATA as REAL  # noqa: E402


def painter_plane(mat: Path, shape: tuple, names: dict) -> np.ndarray:
    """Part names painted in annotation order, object by object, part by part (later wins)."""
    d = sio.loadmat(str(mat), squeeze_me=True, struct_as_record=False)
    out = np.full(shape, "", dtype=object)
    for obj in np.atleast_1d(d["anno"].objects):
        for part in np.atleast_1d(obj.parts):
            mask = np.asarray(part.mask).astype(bool)
            out[mask] = names[str(part.part_name)]
    return out


def corner_shrink(plane: np.ndarray, size: int) -> np.ndarray:
    h, w = plane.shape
    rows = [math.floor(i * (h - 1) / (size - 1) + 0.5) for i in range(size)]
    cols = [math.floor(j * (w - 1) / (size - 1) + 0.5) for j in range(size)]
    return plane[np.ix_(rows, cols)]


def test_store_part_plane_agrees_with_painter_order(tmp_path):
    if not (REAL / "pascal_part" / "part2ind.m").is_file():
        pytest.skip(f"real Pascal-Part files not available under {REAL}")
    from test_pascal import HAND_NAMES

    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict
    from broden_builder.store.reader import BrodenStore

    root = tmp_path / "pascal"
    (root / "VOCdevkit" / "VOC2010" / "JPEGImages").mkdir(parents=True)
    (root / "Annotations_Part").mkdir()
    for f in sorted((REAL / "pascal_part" / "JPEGImages").glob("*.jpg")):
        (root / "VOCdevkit" / "VOC2010" / "JPEGImages" / f.name).write_bytes(f.read_bytes())
    for f in sorted((REAL / "pascal_part" / "Annotations_Part").glob("*.mat")):
        (root / "Annotations_Part" / f.name).write_bytes(f.read_bytes())
    (root / "part2ind.m").write_bytes((REAL / "pascal_part" / "part2ind.m").read_bytes())
    recipe = recipe_from_dict({"size": 224, "segmentation_size": 112, "min_frequency": 1, "min_coverage": 0,
                               "color": False, "sources": [{"type": "pascal", "path": str(root), "categories": ["part"]}]})
    build_store(recipe, tmp_path / "store", quiet=True)
    store = BrodenStore(tmp_path / "store")
    agree = total = 0
    for row in store.rows:
        ident = Path(row.image).stem
        with Image.open(root / "VOCdevkit" / "VOC2010" / "JPEGImages" / f"{ident}.jpg") as im:
            shape = (im.height, im.width)
        ref = corner_shrink(painter_plane(root / "Annotations_Part" / f"{ident}.mat", shape, HAND_NAMES), 112)
        layers = store.pixel_layers(row.index, "part")
        assert list(row.cells["part"]) == [f"pascal/{ident}_part.png"]  # one layer: "_part.png"
        plane = layers[0] if layers else np.zeros((112, 112), int)
        got = np.full(plane.shape, "", dtype=object)
        for n in np.unique(plane):
            if n:
                got[plane == n] = store.label_by_number[int(n)].name
        agree += int((got == ref).sum())
        total += ref.size
    assert total == 4 * 112 * 112
    print(f"agreement {agree / total:.4%}")
    assert agree / total >= 0.99, agree / total
