"""``dissect run --controls`` and ``dissect compare`` beside them (issue 20, item 4).

Oracles: the rotated control equals an independent ``dissect run --rotate 0``; the trained result
equals a plain run; the random control's weights equal the architecture built after
``torch.manual_seed(0)``; the rotation itself equals scoring activations rotated in numpy by the
paper's definition (unit i = sum_j Q[i, j] a_j, before thresholds, each unit at its own quantile);
the printed tables are checked against counts made here from result.json; significant detectors
come from a hand-written result.json."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from broden_builder.store.reader import BrodenStore
from conftest import build_synthetic
from dissect.cli import main
from dissect_helpers import TINY_MODEL_SOURCE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    build_synthetic(root / "store", count=24, seed=4)
    (root / "tinymodels.py").write_text(TINY_MODEL_SOURCE)
    return root


def _run(root: Path, out: str, *extra) -> int:
    return main(["run", "--store", str(root / "store"), "--model", f"{root / 'tinymodels.py'}:tiny",
                 "--layer", "features.0", "--layer", "features.2", "--out", str(root / out), "--quiet",
                 "--workers", "0", "--device", "cpu", "--no-report", *extra])


def _doc(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def _row(doc: dict) -> list:
    """units, detectors, unique concepts, significant, mean best IoU: counted here from result.json."""
    det = [u for u in doc["units"] if u["iou"] >= doc["settings"]["iou_threshold"]]
    sig = "-" if not all("significant" in u for u in doc["units"]) else str(sum(u["significant"] for u in doc["units"]))
    return [str(len(doc["units"])), str(len(det)), str(len({u["label"] for u in det})), sig,
            f"{sum(u['iou'] for u in doc['units']) / len(doc['units']):.3f}"]


def test_run_controls_writes_three_comparable_results(setup, capsys, caplog):
    root = setup
    caplog.set_level(logging.INFO, logger="dissect.engine._runner")
    assert _run(root, "c", "--controls") == 0
    printed = capsys.readouterr().out
    assert any("reusing the activation cache" in r.getMessage() for r in caplog.records)  # rotated: no second forward
    assert _run(root, "plain") == 0 and _run(root, "rot", "--rotate", "0") == 0
    for layer in ("features.0", "features.2"):
        for mine, oracle in ((root / "c" / layer, root / "plain" / layer),
                             (root / "c" / "controls" / "rotated" / layer, root / "rot" / layer)):
            np.testing.assert_array_equal(np.load(mine / "iou.npy"), np.load(oracle / "iou.npy"))
            np.testing.assert_array_equal(np.load(mine / "thresholds.npy"), np.load(oracle / "thresholds.npy"))
        rand = _doc(root / "c" / "controls" / "random" / layer)
        assert rand["model"]["weights"].startswith("none (random init")
        assert not np.array_equal(np.load(root / "c" / "controls" / "random" / layer / "thresholds.npy"),
                                  np.load(root / "c" / layer / "thresholds.npy"))
    assert _doc(root / "c" / "controls" / "rotated" / "features.2")["settings"]["basis"]["seed"] == 0
    assert not (root / "c" / ".controls_cache").exists() and not (root / "c" / ".dissect_cache").exists()
    assert (root / "c" / "controls" / "compare.html").is_file()
    # the printed table: one row per (layer, run), numbers as counted from the files
    lines = printed.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("run ") and "mean best IoU" in l)
    rows = lines[header + 1:header + 7]
    for kind, folder in (("trained", ""), ("random init", "controls/random/"), ("rotated (seed 0)", "controls/rotated/")):
        for layer in ("features.0", "features.2"):
            row = next(r for r in rows if f" {kind} " in r and f" {layer} " in r).split()
            i = row.index(layer)
            assert row[i + 1:i + 6] == _row(_doc(root / "c" / f"{folder}{layer}"))
    # dissect compare OUT brings the controls along
    assert main(["compare", str(root / "c"), "--out", str(root / "cmp")]) == 0
    table = capsys.readouterr().out
    assert sum(1 for l in table.splitlines() if " random init " in l) == 2
    assert sum(1 for l in table.splitlines() if " rotated " in l) == 2


def test_random_init_is_the_architecture_after_seed_0():
    from dissect.tools import random_init

    ns: dict = {}
    exec(TINY_MODEL_SOURCE, ns)
    trained = ns["tiny"]()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    lm = random_init(trained, 0)
    torch.manual_seed(0)
    oracle = ns["Tiny"]().state_dict()
    got = lm.module.state_dict()
    assert got.keys() == oracle.keys() and all(torch.equal(got[k], oracle[k]) for k in oracle)
    assert all(torch.equal(trained.state_dict()[k], before[k]) for k in before)  # the trained model is untouched
    assert not torch.equal(got["head.weight"], before["head.weight"])


def test_controls_refuse_rotate(setup, capsys):
    assert _run(setup, "bad", "--controls", "--rotate", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--controls" in err[0] and "--rotate" in err[0]


def test_rotation_is_the_papers_definition(setup, capsys):
    """--rotate S equals scoring Q @ a computed here (all units mixed before thresholds, each rotated
    unit at its own top quantile): the rotation is applied where section 3.2 applies it."""
    from dissect.engine import random_orthogonal

    root = setup
    n = len(BrodenStore(root / "store").rows)
    a = np.random.default_rng(2).gamma(0.5, size=(n, 12, 8, 8)).astype(np.float32)
    q = random_orthogonal(12, 7)
    rotated = np.einsum("ij,njhw->nihw", q, a.astype(np.float64)).astype(np.float32)
    np.save(root / "a.npy", a)
    np.save(root / "qa.npy", rotated)
    base = ["score", "--store", str(root / "store"), "--out", str(root / "sc"), "--quiet", "--workers", "0",
            "--device", "cpu", "--no-report"]
    assert main(base + ["--activations", str(root / "a.npy"), "--name", "rot", "--rotate", "7"]) == 0
    assert main(base + ["--activations", str(root / "qa.npy"), "--name", "pre"]) == 0
    capsys.readouterr()
    t_rot, t_pre = (np.load(root / "sc" / k / "thresholds.npy") for k in ("rot", "pre"))
    np.testing.assert_allclose(t_rot, t_pre, rtol=1e-5, atol=1e-6)
    i_rot, i_pre = (np.load(root / "sc" / k / "iou.npy") for k in ("rot", "pre"))
    assert np.abs(i_rot - i_pre).max() < 0.02  # masks may differ at a few pixels tied at the threshold


def _hand_result(folder: Path, layer: str, units: list) -> None:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "layer": layer, "model": {"kind": "module", "class": "M"}, "settings": {"iou_threshold": 0.04},
        "summary": {"units": len(units), "detectors": sum(u["detector"] for u in units),
                    "per_category": {"object": sum(u["detector"] for u in units)},
                    "unique_detectors": {"object": len({u["label"] for u in units if u["detector"]})}},
        "units": units}))


def test_compare_shows_significant_detectors_only_with_the_null(tmp_path, capsys):
    def u(i, iou, sig=None, **kw):
        d = {"unit_index": i, "unit": i + 1, "label": f"c{i % 2}", "category": "object", "iou": iou,
             "detector": iou >= 0.04, **kw}
        if sig is not None:
            d.update(p_value=0.001 if sig else 0.5, q_value=0.002 if sig else 0.6, significant=sig)
        return d

    _hand_result(tmp_path / "withnull" / "l4", "l4", [u(0, 0.2, True), u(1, 0.05, False), u(2, 0.3, True), u(3, 0.01, False)])
    _hand_result(tmp_path / "plain" / "l4", "l4", [u(0, 0.2), u(1, 0.05), u(2, 0.0, constant=True, constant_value=0.0)])
    assert main(["compare", str(tmp_path / "withnull"), str(tmp_path / "plain"), "--out", str(tmp_path / "cmp")]) == 0
    lines = [l.split() for l in capsys.readouterr().out.splitlines()]
    rows = [l for l in lines if "l4" in l]
    assert [r[r.index("l4") + 1:] for r in rows] == [["4", "3", "2", "2", f"{0.56 / 4:.3f}", "0"],
                                                   ["3", "2", "2", "-", f"{0.25 / 3:.3f}", "1"]]
    import csv

    allrows = [r for r in csv.DictReader((tmp_path / "cmp" / "compare.csv").open()) if r["category"] == "all"]
    assert [r["significant_detectors"] for r in allrows] == ["2", ""]
    assert [r["constant_units"] for r in allrows] == ["0", "1"]
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<td>2</td>" in page and "<td>-</td>" in page


def test_controls_of_a_random_model_do_not_call_it_trained(tmp_path, synthetic_store):
    """A model with random weights (--weights none) is the model "as given" beside its controls,
    never "trained" (the random-init control then repeats it)."""
    import torchvision  # noqa: F401  (the model spec below)

    from dissect.cli import main

    out = tmp_path / "o"
    rc = main(["run", "--store", str(synthetic_store), "--model", "resnet18", "--weights", "none", "--layer",
               "layer1", "--controls", "--out", str(out), "--quiet", "--no-report", "--workers", "0",
               "--batch-size", "20"])
    assert rc == 0
    rows = (out / "controls" / "compare.csv").read_text()
    assert "trained" not in rows and "as given" in rows


def test_a_log_says_which_control_run_each_pass_belongs_to(setup):
    """Off a terminal each of the three runs is announced before its passes, with its folder."""
    from broden_builder.progress import progress_to

    root = setup
    got = []
    with progress_to(got.append):
        assert main(["run", "--store", str(root / "store"), "--model", f"{root / 'tinymodels.py'}:tiny",
                     "--layer", "features.0", "--out", str(root / "announced"), "--workers", "0",
                     "--device", "cpu", "--no-report", "--controls"]) == 0
    notes = [g for g in got if isinstance(g, str) and g.startswith("controls ")]
    out = root / "announced"
    assert notes == [f"controls 1/3: the model as given -> {out}",
                     f"controls 2/3: its layers rotated (seed 0) -> {out / 'controls' / 'rotated'}",
                     f"controls 3/3: the same architecture with random weights (seed 0) -> {out / 'controls' / 'random'}"]
    first_pass = [i for i, g in enumerate(got) if not isinstance(g, str) and g.desc.startswith("pass 1/2")]
    assert got.index(notes[0]) < first_pass[0] and got.index(notes[2]) < first_pass[-1]


def test_the_random_controls_warning_says_what_its_weights_are(setup, caplog):
    """The random-init control's run is warned about as what it is (reset_parameters after a seed), not
    as '--weights none', which the user did not give."""
    import logging

    root = setup
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--store", str(root / "store"), "--model", f"{root / 'tinymodels.py'}:tiny",
                     "--layer", "features.0", "--out", str(root / "warned"), "--quiet", "--workers", "0",
                     "--device", "cpu", "--no-report", "--controls"]) == 0
    said = [r.getMessage() for r in caplog.records if "RANDOM weights" in r.getMessage()]
    assert said and all("--weights none" not in m for m in said), said
    assert any("reset_parameters, torch seed 0" in m for m in said), said
