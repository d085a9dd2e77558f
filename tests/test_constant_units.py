"""Dead and constant units (issue 20, item 5): a unit whose activations take one value over the
whole probe set is reported as constant in the console, result.json, the report and the summary;
it is never a detector and never significant. Oracles: which units are constant is decided here
from the activation arrays themselves (np.ptp == 0), or from a plain forward of the model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from broden_builder.store.reader import BrodenStore
from conftest import build_synthetic
from dissect.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("constant")
    build_synthetic(root / "store", count=24, seed=3)
    return root


def _score(root, acts: np.ndarray, name: str, capsys, *extra) -> tuple:
    np.save(root / f"{name}.npy", acts)
    rc = main(["score", "--store", str(root / "store"), "--activations", str(root / f"{name}.npy"), "--out",
               str(root / "out"), "--name", name, "--quiet", "--workers", "0", "--device", "cpu", *extra])
    assert rc == 0
    printed = capsys.readouterr().out
    return json.loads((root / "out" / name / "result.json").read_text()), printed


def test_some_constant_units_are_flagged_and_never_detectors(store, capsys):
    root = store
    st = BrodenStore(root / "store")
    N = len(st.rows)
    rng = np.random.default_rng(1)
    acts = rng.standard_normal((N, 10, 8, 8)).astype(np.float32)
    acts[:, 2] = 0.0  # dead
    acts[:, 5] = 2.5  # constant, not 0
    acts[:, 7] = 0.0
    acts[3, 7, 4, 4] = 1.0  # one position differs: not constant
    oracle = [bool(np.ptp(acts[:, u]) == 0) for u in range(acts.shape[1])]
    assert oracle == [False, False, True, False, False, True, False, False, False, False]
    doc, printed = _score(root, acts, "mixed", capsys)
    assert [u["constant"] for u in doc["units"]] == oracle
    assert [u.get("constant_value") for u in doc["units"] if u["constant"]] == [0.0, 2.5]
    assert not any(u["detector"] for u in doc["units"] if u["constant"])
    assert doc["summary"]["constant"] == 2
    assert doc["summary"]["constant_values"] == {"0": 1, "2.5": 1}
    assert "2 of 10 units are constant (1 all 0, 1 all 2.5)" in printed
    assert "says nothing" not in printed


def test_a_constant_layer_is_reported_as_constant(store, capsys):
    root = store
    N = len(BrodenStore(root / "store").rows)
    acts = np.zeros((N, 12, 4, 4), np.float32)
    doc, printed = _score(root, acts, "flat", capsys)
    assert all(u["constant"] and u["constant_value"] == 0.0 and not u["detector"] for u in doc["units"])
    assert doc["summary"]["constant"] == 12 and doc["summary"]["detectors"] == 0
    assert "12 of 12 units are constant (all 0): this layer says nothing" in printed
    page = (root / "out" / "flat" / "report.html").read_text()
    assert "12 of 12 units are constant (all 0): this layer says nothing" in page
    index = (root / "out" / "index.html").read_text()
    assert "(12 constant)" in index


def test_constant_units_never_significant_nor_counted():
    """mark_constant overrides detector/significant flags; the report's summary never counts them."""
    from dissect.results import constant_text, mark_constant, summarise

    units = [{"unit_index": i, "label": "sky", "category": "object", "iou": 0.5, "detector": True,
              "significant": True, "q_value": 0.0} for i in range(3)]
    mark_constant(units, np.array([True, False, True]), np.array([0.0, 1.0, -0.0]))
    assert [u["detector"] for u in units] == [False, True, False]
    assert [u["significant"] for u in units] == [False, True, False]
    s = summarise(units, ["object"])
    assert s["detectors"] == 1 and s["constant"] == 2 and s["constant_values"] == {"0": 2}
    assert constant_text(s) == "2 of 3 units are constant (all 0)"
    units[1]["constant"] = False  # summarise itself never counts a constant unit, whatever its flags say
    units[0]["detector"] = True
    assert summarise(units, ["object"])["detectors"] == 1


def test_random_init_mobilenet_v2_last_layer_is_all_zero(store, capsys):
    """A random-init MobileNetV2 features.18: every activation is 0 on these images as the statistics see
    them (the default float16 cache: float32 values below 1e-9, checked here by a plain forward), and
    dissect says so instead of "0/1280 detectors" alone."""
    torchvision = pytest.importorskip("torchvision")
    root = store
    st = BrodenStore(root / "store")
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None).eval()
    seen = {}
    net.features[18].register_forward_hook(lambda m, i, o: seen.__setitem__("a", o.detach()))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = torch.stack([(torch.from_numpy(np.array(st.load_image(i))).permute(2, 0, 1).float() / 255 - mean) / std
                     for i in range(len(st.rows))])
    with torch.no_grad():
        net(x)
    a = seen["a"]
    assert a.shape[1] == 1280 and bool((a.half() == 0).all()), "the oracle premise: features.18 is all 0 in float16"
    rc = main(["run", "--store", str(root / "store"), "--model", "mobilenet_v2", "--weights", "none", "--layer",
               "features.18", "--out", str(root / "mnv2"), "--quiet", "--workers", "0", "--device", "cpu", "--no-report"])
    assert rc == 0
    printed = capsys.readouterr().out
    doc = json.loads((root / "mnv2" / "features.18" / "result.json").read_text())
    assert doc["summary"]["constant"] == 1280 and doc["summary"]["constant_values"] == {"0": 1280}
    assert "features.18: 0/1280 units are detectors; 1,280 of 1,280 units are constant (all 0): this layer says nothing" \
        in printed
