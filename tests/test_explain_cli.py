"""`dissect explain` end to end: scored activations and a model, against the plain compexp loop."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from broden_builder.store.reader import BrodenStore
from conftest import build_synthetic
from dissect.cli import main
from dissect_helpers import TINY_MODEL_SOURCE
from explain_reference import compexp_search, pack, plain_store_masks


@pytest.fixture(scope="module")
def store30(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "store"
    build_synthetic(out, count=30, seed=3)
    return out


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _plain_rows(store, acts, thr, numbers, names):
    lab, units = plain_store_masks(store, acts, thr, numbers)
    packed = pack(lab)
    out = []
    for u in range(units.shape[0]):
        f, v, single, sv = compexp_search(packed, pack(units[u]), length=3, beam=5)
        if f is None:
            out.append(("", 0.0, 0.0))
            continue
        from dissect.explain import Formula

        out.append((Formula(*f).text(lambda c: names[numbers[c]]), v, sv))
    return out


def test_explain_scored_activations(store30, tmp_path, capsys):
    store = BrodenStore(store30)
    rng = np.random.default_rng(1)
    acts = rng.standard_normal((len(store.rows), 4, 4, 4)).astype(np.float32)
    np.save(tmp_path / "feats.npy", acts)
    rc = main(["explain", "--store", str(store30), "--activations", str(tmp_path / "feats.npy"), "--out",
               str(tmp_path / "out"), "--quiet", "--no-report", "--workers", "0", "--quantile", "0.05"])
    assert rc == 0
    assert "4 units explained" in capsys.readouterr().out
    d = tmp_path / "out" / "feats"
    assert (d / "result.json").is_file()  # scored first
    rows = _csv(d / "explanations.csv")
    assert [int(r["unit"]) for r in rows] == [1, 2, 3, 4]
    from dissect.engine._passes import label_columns

    numbers, _p, names = label_columns(store, list(store.categories))
    thr = np.load(d / "thresholds.npy")
    plain = _plain_rows(store, acts, thr, numbers, names)
    for r, (f, v, sv) in zip(rows, plain):
        assert r["formula"] == f and float(r["iou"]) == v and float(r["single_iou"]) == sv
    # a second call reuses the result folder
    rc = main(["explain", "--store", str(store30), "--activations", str(tmp_path / "feats.npy"), "--out",
               str(tmp_path / "out"), "--quiet", "--no-report", "--workers", "0", "--length", "1"])
    assert rc == 0 and "using the thresholds" in capsys.readouterr().out
    assert all(int(r["length"]) <= 1 for r in _csv(d / "explanations.csv"))


def test_explain_model_layer(store30, tmp_path, capsys):
    (tmp_path / "tiny.py").write_text(TINY_MODEL_SOURCE)
    out = tmp_path / "out"
    rc = main(["explain", "--store", str(store30), "--model", f"{tmp_path / 'tiny.py'}:tiny", "--layer", "features",
               "--out", str(out), "--quiet", "--no-report", "--workers", "0", "--device", "cpu", "--input-size", "64"])
    assert rc == 0, capsys.readouterr().err
    rows = _csv(out / "features" / "explanations.csv")
    assert len(rows) == 5
    # oracle: the layer's float16-rounded activations from a plain forward pass, then the plain loop
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_mod", tmp_path / "tiny.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.tiny().eval()
    from broden_builder.torch_dataset import BrodenDataset

    store = BrodenStore(store30)
    ds = BrodenDataset(store, with_labels=False, image_size=(64, 64))
    with torch.no_grad():
        x = torch.stack([ds[i]["image"] for i in range(len(ds))])
        acts = model.features(x).half().float().numpy()
    from dissect.engine._passes import label_columns

    numbers, _p, names = label_columns(store, list(store.categories))
    thr = np.load(out / "features" / "thresholds.npy")
    plain = _plain_rows(store, acts, thr, numbers, names)
    for r, (f, v, sv) in zip(rows, plain):
        assert r["formula"] == f and float(r["iou"]) == pytest.approx(v, rel=1e-12)


def test_explain_bad_inputs(store30, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((3, 2, 2, 2), np.float32))
    rc = main(["explain", "--store", str(store30), "--activations", str(tmp_path / "bad.npy"), "--out",
               str(tmp_path / "o"), "--quiet", "--no-report"])
    assert rc in (1, 2) and "30 rows" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a usage error: --beam is bounded by its argparse type (issue 25)
        main(["explain", "--store", str(store30), "--activations", str(tmp_path / "bad.npy"), "--out",
              str(tmp_path / "o"), "--beam", "0"])
    assert e.value.code == 2 and "--beam" in capsys.readouterr().err


def test_result_explain_api(store30, tmp_path):
    from dissect import Dissection

    store = BrodenStore(store30)
    acts = np.random.default_rng(2).standard_normal((len(store.rows), 3, 2, 2)).astype(np.float32)
    result = Dissection.score(acts, store30, name="mine", out=tmp_path / "out", report=False, workers=0, quiet=True)
    rows = result.explain(acts, length=2, beam=3)
    assert [r["unit"] for r in rows] == [1, 2, 3] and all(r["length"] <= 2 for r in rows)
    assert all(r["iou"] >= r["single_iou"] for r in rows)
    assert (tmp_path / "out" / "mine" / "explanations.csv").is_file()


def test_report_shows_formula_and_ablation_links(store30, tmp_path):
    import json

    store = BrodenStore(store30)
    acts = np.random.default_rng(3).standard_normal((len(store.rows), 3, 2, 2)).astype(np.float32)
    np.save(tmp_path / "f.npy", acts)
    assert main(["explain", "--store", str(store30), "--activations", str(tmp_path / "f.npy"), "--out",
                 str(tmp_path / "out"), "--quiet", "--workers", "0", "--length", "2"]) == 0
    d = tmp_path / "out" / "f"
    (d / "ablations.json").write_text(json.dumps([{"file": "ablation_units_2_zero.csv", "units": [2], "mode": "zero",
                                                   "accuracy_before": 0.5, "accuracy_after": 0.25}]))
    assert main(["report", str(tmp_path / "out"), "--quiet"]) == 0
    page = (d / "report.html").read_text()
    rows = _csv(d / "explanations.csv")
    from html import escape

    assert escape(rows[0]["formula"]) in page and 'href="ablation_units_2_zero.csv"' in page


def test_single_concept_iou_is_the_tally_iou_under_union_all(store30, tmp_path):
    """explain's masks are the tally's: its best single concept (IoU over all images) equals the
    best IoU of iou.npy from the same scoring with --union all."""
    store = BrodenStore(store30)
    acts = np.random.default_rng(4).standard_normal((len(store.rows), 5, 4, 4)).astype(np.float32)
    np.save(tmp_path / "u.npy", acts)
    assert main(["explain", "--store", str(store30), "--activations", str(tmp_path / "u.npy"), "--out",
                 str(tmp_path / "out"), "--quiet", "--no-report", "--workers", "0", "--union", "all",
                 "--length", "1"]) == 0
    iou = np.load(tmp_path / "out" / "u" / "iou.npy")
    rows = _csv(tmp_path / "out" / "u" / "explanations.csv")
    assert [float(r["single_iou"]) for r in rows] == pytest.approx(iou.max(1).astype(np.float64).tolist(), rel=1e-6)
