"""dissect run / score / layers end to end on a tiny synthetic store, against plain references."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from broden_builder import BrodenStore
from conftest import build_synthetic
from dissect.cli import main
from dissect.results import load_result
from dissect_helpers import TINY_MODEL_SOURCE, reference_iou

REPO = Path(__file__).resolve().parents[1]
RUN_ARGS = ["--model", "resnet18", "--weights", "none", "--layer", "layer4", "--device", "cpu",
            "--batch-size", "4", "--workers", "0", "--quiet", "--top-k", "3"]


@pytest.fixture(scope="session")
def store40(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dissect") / "store"
    build_synthetic(out, count=40, size=64, seg=32)
    return out


@pytest.fixture(scope="session")
def run1(store40, tmp_path_factory) -> Path:
    """One uninterrupted single-process `dissect run` (activation cache kept for the reference)."""
    out = tmp_path_factory.mktemp("run1")
    assert main(["run", "--store", str(store40), "--out", str(out), "--keep-cache"] + RUN_ARGS) == 0
    return out


def _same_results(a: Path, b: Path) -> None:
    for name in ("iou.npy", "thresholds.npy"):
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    with np.load(a / "topk.npz") as za, np.load(b / "topk.npz") as zb:
        for k in ("indices", "values", "maps"):
            np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    assert (a / "tally.csv").read_text() == (b / "tally.csv").read_text()


def _independent_layer4(store: BrodenStore) -> np.ndarray:
    """resnet18 (seed-0 random init) layer4 by calling the children in order, batches of 4."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    trunk = torch.nn.Sequential(*list(m.children())[:-2])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    for s in range(0, len(store), 4):
        imgs = [np.asarray(Image.open(store.image_path(i)).convert("RGB")) for i in range(s, min(s + 4, len(store)))]
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            out.append(trunk((x - mean) / std))
    return torch.cat(out).numpy()


def test_run_outputs_match_references(run1, store40):
    d = run1 / "layer4"
    store = BrodenStore(store40)
    for name in ("tally.csv", "result.json", "iou.npy", "thresholds.npy", "topk.npz"):
        assert (d / name).is_file(), name
    doc = json.loads((d / "result.json").read_text())
    assert doc["layer"] == "layer4" and doc["store"]["images"] == 40
    assert doc["store"]["fingerprint"] == store.fingerprint()
    assert doc["settings"]["quantile"] == 0.005 and doc["settings"]["union"] == "original"
    assert [u["unit_index"] for u in doc["units"]] == list(range(512))
    assert [l["number"] for l in doc["labels"]] == sorted(l.number for l in store.labels)
    iou = np.load(d / "iou.npy")
    thr = np.load(d / "thresholds.npy")
    assert iou.shape == (512, len(store.labels)) and iou.dtype == np.float32 and thr.shape == (512,)

    # the cache holds layer4 at layer resolution, float16; it matches an independent forward pass
    cache = np.load(run1 / ".dissect_cache" / "layer4.rank0of1.npy")
    assert cache.shape == (40, 512, 2, 2) and cache.dtype == np.float16
    np.testing.assert_allclose(cache.astype(np.float32), _independent_layer4(store), rtol=2e-3, atol=2e-3)
    acts = cache.astype(np.float32)

    # thresholds: numpy's quantile over every position of every image
    ref_thr = np.quantile(acts.transpose(1, 0, 2, 3).reshape(512, -1), 1 - 0.005, axis=1)
    np.testing.assert_array_equal(thr, ref_thr.astype(np.float32))

    # IoU of some units: plain loops over images and units
    units = [0, 7, 100, 511]
    ref, numbers = reference_iou(acts, ref_thr, store, range(40), units)
    np.testing.assert_allclose(iou[units], ref, rtol=1e-6, atol=1e-7)

    # top-k: the 3 images with the largest max activation, ties by smaller index
    with np.load(d / "topk.npz") as z:
        assert z["indices"].shape == (512, 3) and z["maps"].shape == (512, 3, 2, 2) and z["maps"].dtype == np.float16
        mx = acts.max(axis=(2, 3))  # [N, U]
        for u in units:
            order = sorted(range(40), key=lambda i: (-mx[i, u], i))[:3]
            assert z["indices"][u].tolist() == order
            np.testing.assert_array_equal(z["maps"][u], cache[order, u])

    # tally.csv: best first, unit 1-based, per-category columns in store order
    with open(d / "tally.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 512
    head = ["unit", "category", "label", "score"]
    for c in store.categories:
        head += [f"{c}-label", f"{c}-truth", f"{c}-activation", f"{c}-intersect", f"{c}-iou"]
    with open(d / "tally.csv", newline="") as f:
        assert next(csv.reader(f)) == head
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    top = rows[0]
    u = int(top["unit"]) - 1
    assert float(top["score"]) == pytest.approx(float(iou[u].max()))
    j = int(np.argmax(iou[u]))
    assert top["label"] == store.label_by_number[numbers[j]].name

    res = load_result(d)
    assert res.summary["detectors"] == sum(1 for x in res.units if x["iou"] >= 0.04)
    assert res.summary_line().startswith(f"layer4: {res.summary['detectors']}/512 units are detectors")


def test_run_prints_summary_line(run1, store40, tmp_path, capsys):
    # a second run with the kept cache directory reuses the activations and gives the same result
    out = tmp_path / "again"
    args = ["run", "--store", str(store40), "--out", str(out), "--cache-dir", str(run1 / ".dissect_cache")] + RUN_ARGS
    assert main(args) == 0
    first, line = capsys.readouterr().out.splitlines()[:2]
    assert first == "model resnet18: RANDOM weights (--weights none: random init, seed 0)"  # never silent
    assert line.startswith("layer4: ") and "/512 units are detectors" in line
    _same_results(run1 / "layer4", out / "layer4")


def test_score_constructed_label_mask_has_iou_one(store40, tmp_path, capsys):
    store = BrodenStore(store40)
    lab = next(l for l in store.labels if store.primary_category(l.number) == "object")
    masks = np.zeros((40, 2, 32, 32), np.float32)
    for i in range(40):
        for layer in store.pixel_layers(i, "object"):
            masks[i, 0] = np.maximum(masks[i, 0], layer == lab.number)
    frac = masks[:, 0].mean()
    assert 0 < frac < 0.4
    masks[:, 1] = np.random.default_rng(0).random((40, 32, 32))
    path = tmp_path / "feats.npy"
    np.save(path, masks)
    q = float(min(0.5, frac + 0.05))  # the top quantile reaches into the zeros: threshold 0, mask = label
    assert main(["score", "--store", str(store40), "--activations", str(path), "--out", str(tmp_path / "o"),
                 "--quantile", str(q), "--quiet", "--workers", "0", "--device", "cpu", "--batch-size", "7"]) == 0
    assert capsys.readouterr().out.startswith("feats: ")
    res = load_result(tmp_path / "o" / "feats")
    assert res.units[0]["label"] == lab.name and res.units[0]["iou"] == 1.0 and res.units[0]["detector"]
    assert res.units[0]["per_category"]["object"]["intersect"] == int(masks[:, 0].sum())
    assert res.thresholds[0] == 0.0
    # the same through a .pt file, with the union rule 'all' (A = every image: still IoU 1)
    torch.save(torch.from_numpy(masks), tmp_path / "feats.pt")
    assert main(["score", "--store", str(store40), "--activations", str(tmp_path / "feats.pt"), "--out",
                 str(tmp_path / "o"), "--name", "pt", "--quantile", str(q), "--union", "all", "--quiet",
                 "--workers", "0", "--device", "cpu"]) == 0
    assert load_result(tmp_path / "o" / "pt").units[0]["iou"] == 1.0


def _cli(args, env_extra=None, check=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, "-m", "dissect.cli"] + args, env=env, capture_output=True, text=True, timeout=300)
    if check is not None:
        assert p.returncode == check, p.stderr[-3000:]
    return p


def test_resume_after_kill_gives_identical_result(run1, store40, tmp_path):
    out = tmp_path / "killed"
    args = ["run", "--store", str(store40), "--out", str(out), "--checkpoint-every", "2"] + RUN_ARGS
    _cli(args, {"DISSECT_FAULT_AFTER": "1:5"}, check=75)  # killed in pass 1 after batch 5
    assert (out / ".dissect_state" / "rank0of1.pt").is_file() and not (out / "layer4").exists()
    _cli(args, {"DISSECT_FAULT_AFTER": "2:7"}, check=75)  # resumed, then killed in pass 2
    _cli(args, check=0)
    _same_results(run1 / "layer4", out / "layer4")
    assert not (out / ".dissect_state" / "rank0of1.pt").exists() and not (out / ".dissect_cache").exists()


def test_score_never_resumes_a_checkpoint_of_other_data(store40, tmp_path):
    """A `dissect score` killed on data A, rerun on data B into the same folder, must equal a fresh run on B."""
    rng = np.random.default_rng(1)
    path = tmp_path / "feats.npy"  # the same file name, rewritten with other data between the runs
    np.save(path, rng.normal(size=(40, 4, 4, 4)).astype(np.float32))
    common = ["--store", str(store40), "--device", "cpu", "--batch-size", "4", "--workers", "0", "--quiet",
              "--checkpoint-every", "1", "--name", "acts", "--no-report"]
    out = tmp_path / "shared"
    _cli(["score", "--activations", str(path), "--out", str(out)] + common, {"DISSECT_FAULT_AFTER": "2:3"}, check=75)
    assert (out / ".dissect_state" / "rank0of1.pt").is_file()
    np.save(path, rng.normal(size=(40, 4, 4, 4)).astype(np.float32))
    _cli(["score", "--activations", str(path), "--out", str(out)] + common, check=0)
    fresh = tmp_path / "fresh"
    _cli(["score", "--activations", str(path), "--out", str(fresh)] + common, check=0)
    _same_results(fresh / "acts", out / "acts")


def test_two_process_torchrun_equals_one_process(run1, store40, tmp_path):
    out = tmp_path / "dist"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dissect.cli", "run", "--store", str(store40), "--out", str(out)] + RUN_ARGS
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.count("units are detectors") == 1  # rank 0 prints
    _same_results(run1 / "layer4", out / "layer4")
    doc = json.loads((out / "layer4" / "result.json").read_text())
    assert doc["settings"]["world_size"] == 2 and doc["store"]["images"] == 40


# ---------------------------------------------------------------------------- bad input
@pytest.fixture()
def tiny_py(tmp_path) -> Path:
    p = tmp_path / "tinymodels.py"
    p.write_text(TINY_MODEL_SOURCE)
    return p


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_bad_activations(store40, tmp_path, capsys):
    base = ["score", "--store", str(store40), "--out", str(tmp_path / "o"), "--quiet", "--workers", "0", "--device", "cpu"]
    np.save(tmp_path / "n.npy", np.zeros((39, 3, 2, 2), np.float32))
    assert main(base + ["--activations", str(tmp_path / "n.npy")]) == 1
    e = _err(capsys)
    assert "n.npy" in e and "39 images" in e and "40 rows" in e
    np.save(tmp_path / "s.npy", np.zeros((40, 3, 2), np.float32))
    assert main(base + ["--activations", str(tmp_path / "s.npy")]) == 1
    assert "shape (40, 3, 2)" in _err(capsys)
    bad = np.random.default_rng(0).random((40, 3, 2, 2)).astype(np.float32)
    bad[17, 2, 1, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert main(base + ["--activations", str(tmp_path / "nan.npy")]) == 1
    e = _err(capsys)
    assert "unit 2" in e and "NaN" in e and "row 18" in e
    bad[17, 2, 1, 0] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    assert main(base + ["--activations", str(tmp_path / "inf.npy")]) == 1
    assert "unit 2" in (e := _err(capsys)) and "inf" in e
    assert main(base + ["--activations", str(tmp_path / "missing.npy")]) == 1
    assert "missing.npy does not exist" in _err(capsys)


def test_bad_run_inputs(store40, tmp_path, tiny_py, capsys):
    base = ["run", "--store", str(store40), "--out", str(tmp_path / "o"), "--quiet", "--workers", "0", "--device", "cpu"]
    # unknown layer: nearest names listed
    assert main(base + ["--model", f"{tiny_py}:tiny", "--layer", "feature.2"]) == 1
    e = _err(capsys)
    assert "no layer 'feature.2'" in e and "features.2" in e
    # a store lacking a requested category
    assert main(base + ["--model", f"{tiny_py}:tiny", "--layer", "features.2", "--categories", "object,animal"]) == 1
    e = _err(capsys)
    assert "animal" in e and "its categories are" in e
    # a model that fails on the input size (before the layer is reached; the pass stops after it)
    assert main(base + ["--model", f"{tiny_py}:tiny", "--layer", "head", "--input-size", "32"]) == 1
    e = _err(capsys)
    assert "fails on input size 32x32" in e
    # NaN activations: the layer and the unit are named
    assert main(base + ["--model", f"{tiny_py}:nan_unit", "--layer", "poison"]) == 1
    e = _err(capsys)
    assert "layer 'poison'" in e and "unit 2" in e and "NaN" in e
    # a function that does not return a module; a missing file
    assert main(base + ["--model", f"{tiny_py}:not_a_module", "--layer", "x"]) == 1
    assert "not a torch.nn.Module" in _err(capsys)
    assert main(base + ["--model", "nosuchnet", "--layer", "x"]) == 1
    assert "unknown model 'nosuchnet'" in _err(capsys)


def test_run_python_model_two_layers_and_split(store40, tmp_path, tiny_py):
    out = tmp_path / "o"
    assert main(["run", "--store", str(store40), "--out", str(out), "--model", f"{tiny_py}:tiny", "--layer", "features.0",
                 "--layer", "features.2", "--split", "train", "--quiet", "--workers", "0", "--device", "cpu",
                 "--categories", "object", "--categories", "scene,color"]) == 0
    store = BrodenStore(store40)
    n_train = sum(1 for r in store.rows if r.split == "train")
    for layer, units in (("features.0", 6), ("features.2", 5)):
        res = load_result(out / layer)
        assert res.store["images"] == n_train and len(res.units) == units
        assert set(res.summary["per_category"]) == {"color", "object", "scene"}
        assert set(res.topk_indices.ravel().tolist()) <= {r.index for r in store.rows if r.split == "train"}


def test_layers_command(store40, capsys):
    assert main(["layers", "--model", "resnet18", "--store", str(store40)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("layer4 "))
    assert line.split() == ["layer4", "Sequential", "1", "tensor", "1x512x2x2", "nchw"]  # 64 x 64 input
    # torchvision's BasicBlock calls its one ReLU module twice
    assert next(l for l in out.splitlines() if l.startswith("layer1.0.relu ")).split()[:3] == ["layer1.0.relu", "ReLU", "2"]
    assert main(["layers", "--model", "resnet18", "--input-size", "224"]) == 0
    out = capsys.readouterr().out
    assert next(l for l in out.splitlines() if l.startswith("layer4 ")).split()[-2] == "1x512x7x7"
