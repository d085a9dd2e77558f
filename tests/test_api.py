"""The Python API: Dissection / DissectionResult over the runner, checked against constructed answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


def test_public_imports():
    import dissect
    from broden_builder import BrodenDataset, BrodenStore, collate_broden  # noqa: F401
    from dissect import Dissection, DissectionResult  # noqa: F401

    assert "Dissection" in dissect.__all__
    with pytest.raises(AttributeError):
        dissect.NoSuchThing  # noqa: B018


def test_unknown_setting_is_refused(synthetic_store):
    from dissect import Dissection

    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['quantil'\]"):
        Dissection(nn.Identity(), "x", synthetic_store, quantil=0.01)


def test_score_label_masks_gives_iou_one(synthetic_store, tmp_path):
    """Unit 0 is exactly the 'house' object mask, unit 1 exactly 'red-c': both must score IoU 1 on that label."""
    from broden_builder import BrodenStore

    from dissect import Dissection, DissectionResult

    store = BrodenStore(synthetic_store)
    want = {0: ("object", store.label_by_name["house"].number), 1: ("color", store.label_by_name["red-c"].number)}
    r0 = store.rows[0]
    acts = np.zeros((len(store), 3, r0.sh, r0.sw), np.float32)
    rng = np.random.default_rng(0)
    acts[:, 2] = rng.normal(size=acts[:, 2].shape)  # a unit with no meaning
    for unit, (cat, number) in want.items():
        for i in range(len(store)):
            for layer in store.pixel_layers(i, cat):
                acts[i, unit] = np.maximum(acts[i, unit], (layer == number).astype(np.float32))
        frac = acts[:, unit].mean()
        assert 0 < frac < 0.45, (unit, frac)  # the 0.5 quantile's threshold then lies among the zeros
    result = Dissection.score(acts, store, name="masks", out=tmp_path / "O", quantile=0.5, workers=0, quiet=True,
                              device="cpu", checkpoint_every=0)
    rows = result.table()
    assert [r["unit_index"] for r in rows] == [0, 1, 2]
    for unit, (cat, number) in want.items():
        assert rows[unit]["number"] == number and rows[unit]["category"] == cat
        assert rows[unit]["iou"] == pytest.approx(1.0) and rows[unit]["detector"]
        assert rows[unit][f"{cat}-iou"] == pytest.approx(1.0)
        col = [l["number"] for l in result.labels()].index(number)
        assert result.iou()[unit, col] == pytest.approx(1.0)
    assert result.iou().shape == (3, len(result.labels()))
    assert result.thresholds().shape == (3,)
    assert [r["unit_index"] for r in result.detectors()][:2] in ([0, 1], [1, 0])
    # written, reported, and read back identically
    assert (tmp_path / "O" / "index.html").is_file() and (tmp_path / "O" / "masks" / "report.html").is_file()
    back = DissectionResult.load(tmp_path / "O")
    assert back.table() == rows
    assert np.array_equal(back.iou(), result.iou()) and np.array_equal(back.thresholds(), result.thresholds())


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.b = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1))

    def forward(self, x):
        return self.b(self.a(x))


def test_run_on_model_object(synthetic_store, tmp_path):
    from dissect import Dissection

    model = TwoLayers()
    result = Dissection(model, ["a", "b.1"], synthetic_store, device="cpu", workers=0, batch_size=16, quiet=True,
                        checkpoint_every=0, top_k=3).run(out=tmp_path / "O")
    assert list(result) == ["a", "b.1"] and len(result) == 2
    rows = result.table()
    assert [(r["layer"], r["unit"]) for r in rows] == [("a", u) for u in range(1, 5)] + [("b.1", u) for u in range(1, 6)]
    with pytest.raises(ValueError, match="several layers"):
        result.iou()
    with pytest.raises(KeyError, match="was not dissected"):
        result.iou("c")
    # thresholds: numpy's quantile over every position of every image (float16-rounded activations)
    from broden_builder import BrodenDataset

    ds = BrodenDataset(synthetic_store, with_labels=False)
    with torch.no_grad():
        feats = model.a(torch.stack([ds[k]["image"] for k in range(len(ds))])).half().float().numpy()
    ref = np.array([np.quantile(feats[:, u].ravel(), 1 - 0.005) for u in range(4)], np.float32)
    assert np.allclose(result.thresholds("a"), ref, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "O" / "index.html").is_file()
    assert result.report() == tmp_path / "O" / "index.html"
    # segment new images with the dissected units: act > T_k after bilinear upsampling
    x = torch.stack([ds[k]["image"] for k in range(2)])
    masks, rows = result.unit_masks(model, x, "a", units=[1, 3])
    assert masks.shape == (2, 2) + tuple(x.shape[-2:]) and [r["unit_index"] for r in rows] == [1, 3]
    with torch.no_grad():
        fa = model.a(x)
    for j, u in enumerate([1, 3]):
        up = torch.nn.functional.interpolate(fa[:, u:u + 1], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        assert torch.equal(masks[:, j], up > float(result.thresholds("a")[u]))
