"""The notebook API of a DissectionResult (and BrodenStore), on a tiny real dissection.

Oracles: hand-built activations whose units are exact label masks (unit 1 = 'house', unit 2 =
'red-c'), so their labels, masks and top images are known; plain csv/loops for the tables.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from broden_builder import BrodenStore
from broden_builder.torch_dataset import BrodenDataset, collate_broden, load_segbatch


@pytest.fixture(scope="module")
def scored(synthetic_store, tmp_path_factory):
    """Activations = label masks at the segmentation size: IoU 1 for 'house' (unit 1) and 'red-c' (unit 2)."""
    from dissect import Dissection

    store = BrodenStore(synthetic_store)
    house, red = store.label("house").number, store.label("red-c").number
    acts = np.zeros((len(store), 3, 32, 32), np.float32)
    for i in range(len(store)):
        for plane in store.pixel_layers(i, "object"):
            acts[i, 0] += plane == house
        for plane in store.pixel_layers(i, "color"):
            acts[i, 1] += plane == red
    # unit 3 stays 0: never above its threshold, never a detector
    out = tmp_path_factory.mktemp("nb") / "out"
    # quantile 0.5: the threshold lies among the zeros, so each mask unit's mask is exactly its label
    result = Dissection.score(acts, synthetic_store, name="masks", out=out, report=False, upsample="nearest",
                              quantile=0.5, top_k=3, quiet=True, workers=0, device="cpu", checkpoint_every=0)
    return result, store, acts, out


def test_units_for_finds_by_raw_and_display_name(scored):
    result, _, _, _ = scored
    rows = result.units_for("house")
    assert [r["unit"] for r in rows] == [1] and rows[0]["iou"] == pytest.approx(1.0)
    assert [r["unit"] for r in result.units_for("red")] == [2] == [r["unit"] for r in result.units_for("red-c")]
    with pytest.raises(KeyError, match="did you mean 'house'"):
        result.units_for("houes")


def test_top_images_paths_activations_masks(scored):
    result, store, acts, _ = scored
    top = result.top_images(1, k=2)
    assert len(top) == 2
    # activation = the unit's maximum over the image: 1 in any image with a house
    assert all(t["activation"] == pytest.approx(acts[t["row"], 0].max()) for t in top)
    for t in top:
        assert t["path"] == store.image_path(t["row"]) and t["path"].is_file()
        want = np.zeros((32, 32), bool)
        for plane in store.pixel_layers(t["row"], "object"):
            want |= plane == store.label("house").number
        assert t["mask"].dtype == bool and t["mask"].shape == (32, 32)
        assert np.array_equal(t["mask"], want)  # the counted pixels are exactly the house pixels


def test_show_unit_is_a_figure(scored):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    result, _, _, _ = scored
    fig = result.show_unit(1, k=2)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.images]) == 2
    assert "unit 1: house (object, IoU 1.000)" in fig._suptitle.get_text()


def test_html_reprs(scored):
    result, store, _, _ = scored
    html = result._repr_html_()
    assert "<b>masks</b>: 2 of 3 units are detectors; they cover 2 concepts" in html
    assert '<td title="red-c">red</td>' in html
    shtml = store._repr_html_()
    assert f"{len(store)} images" in shtml and "<td>object</td><td>pixel</td>" in shtml and "<td>scene</td><td>image</td>" in shtml


def test_to_csv_and_to_dataframe_agree_with_table(scored, tmp_path):
    result, _, _, _ = scored
    path = result.to_csv(tmp_path / "units.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    table = result.table()
    assert len(rows) == len(table) == 3
    for got, want in zip(rows, table):
        assert got["label"] == want["label"] and float(got["iou"]) == pytest.approx(want["iou"])
    pd = pytest.importorskip("pandas")
    df = result.to_dataframe()
    assert isinstance(df, pd.DataFrame) and list(df["unit"]) == [1, 2, 3] and list(df.columns) == list(table[0])


def test_collate_broden_matches_its_docstring(synthetic_store):
    """collate_broden: 'index' LongTensor[B], 'image' [B,3,H,W], 'seg' SegBatch (as load_segbatch builds it)."""
    ds = BrodenDataset(synthetic_store, image_size=32)
    batch = collate_broden([ds[0], ds[1], ds[2]])
    assert batch["index"].dtype == torch.long and batch["index"].tolist() == [0, 1, 2]
    assert batch["image"].shape == (3, 3, 32, 32)
    ref = load_segbatch(synthetic_store, [0, 1, 2])
    assert type(batch["seg"]) is type(ref)
    for name in ("pixel", "image_level"):
        if hasattr(ref, name):
            a, b = getattr(batch["seg"], name), getattr(ref, name)
            if isinstance(a, dict):
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
