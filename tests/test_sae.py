"""Sparse autoencoders on a layer (issue 21): training, loading (ours and SAELens), and features
dissected beside units.

Oracles: the superposition world's planted concepts (tests/sae_world.py) and a plain NumPy IoU of
thresholded feature maps against the planted masks; a plain NumPy encoder written here from the
SAELens equations; bitwise equality of weights between a killed-and-resumed and an uninterrupted
training.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dissect.cli import main
from dissect.errors import DissectError
from sae_world import build_world

REPO = Path(__file__).resolve().parents[1]
K, U = 40, 16
Q = "0.01"  # each planted concept covers about 1% of the positions (tests/sae_world.py)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sae_world")
    store, acts, D, masks = build_world(root, k=K, units=U)
    rc = main(["sae", "train", "--activations", str(acts), "--layer", "L", "--store", str(store), "--out",
               str(root / "sae"), "--threads", "1", "-q"])  # the default training settings
    assert rc == 0
    return root, store, acts, masks


def _score(root, store, acts, *extra):
    rc = main(["score", "--store", str(store), "--activations", str(acts), "--out", str(root / "out"), "--name", "L",
               "--quantile", Q, "--quiet", "--device", "cpu", "--no-report", *extra])
    assert rc == 0


def _numpy_encode(w: dict, x: np.ndarray, activation: str, k=None, apply_b_dec=True) -> np.ndarray:
    """The SAELens encoder for x [S, d_in], float64, position by position."""
    out = np.zeros((x.shape[0], w["W_enc"].shape[1]))
    for s in range(x.shape[0]):
        v = x[s] - (w["b_dec"] if apply_b_dec else 0.0)
        pre = v @ w["W_enc"].astype(np.float64) + w["b_enc"]
        if activation == "relu":
            out[s] = np.maximum(pre, 0)
        elif activation == "jumprelu":
            out[s] = np.where(pre > w["threshold"], pre, 0.0)
        else:
            keep = np.argsort(-pre, kind="stable")[:k]
            out[s, keep] = np.maximum(pre[keep], 0)
    return out


def _planted_iou(feature_maps: np.ndarray, thresholds: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """IoU [F, K] of (map > threshold) against each planted concept mask, all images pooled."""
    fm = (feature_maps > thresholds[None, :, None, None]).transpose(1, 0, 2, 3).reshape(len(thresholds), -1)
    cm = masks.transpose(1, 0, 2, 3).reshape(masks.shape[1], -1)
    inter = fm.astype(np.float64) @ cm.T.astype(np.float64)
    union = fm.sum(1)[:, None] + cm.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1)


def test_features_recover_superposed_concepts_units_do_not(world):
    """K = 40 concepts in U = 16 units: >= 80% of the concepts have a feature whose best label is that
    concept with IoU >= 0.5; <= 10% as raw units."""
    from safetensors.numpy import load_file

    root, store, acts, masks = world
    _score(root, store, acts)
    _score(root, store, acts, "--sae", f"L={root / 'sae'}")
    found = {}
    for folder in ("L", "L.sae"):
        doc = json.loads((root / "out" / folder / "result.json").read_text())
        best = {}
        for u in doc["units"]:
            if u["iou"] >= 0.5:
                best.setdefault(u["number"] - 1, []).append(u["unit_index"])  # label c + 1 is concept c
        found[folder] = best
    assert len(found["L.sae"]) >= 0.8 * K, len(found["L.sae"])
    assert len(found["L"]) <= 0.1 * K, len(found["L"])
    # the IoU of those features, again with plain NumPy: encoder from the file, masks as planted
    w = load_file(str(root / "sae" / "sae.safetensors"))
    a = np.load(acts).astype(np.float64)
    n, u, h, wd = a.shape
    meta = json.loads((root / "sae" / "sae.json").read_text())
    f = _numpy_encode(w, a.transpose(0, 2, 3, 1).reshape(-1, u), "topk", k=meta["k"])
    fmaps = f.reshape(n, h, wd, -1).transpose(0, 3, 1, 2)
    thr = np.load(root / "out" / "L.sae" / "thresholds.npy").astype(np.float64)
    iou = _planted_iou(fmaps, thr, masks)
    for c, feats in found["L.sae"].items():
        assert max(iou[j, c] for j in feats) >= 0.5 - 1e-6, c
    assert (iou.max(0) >= 0.5 - 1e-6).sum() >= 0.8 * K


def test_sae_json_records_what_it_is_and_its_numbers(world):
    """sae.json: layer, model and store identity, F, K, activation, normalisation, epochs; the explained
    variance and dead features recomputed here from the weights with NumPy."""
    from safetensors.numpy import load_file

    root, store, acts, _ = world
    meta = json.loads((root / "sae" / "sae.json").read_text())
    assert meta["format"] == "broden-dissect-sae" and meta["layer"] == "L" and meta["activation"] == "topk"
    assert meta["units"] == U and meta["features"] == 8 * U and meta["k"] == 2 and meta["epochs"] == 20
    assert meta["model"]["file"] == str(Path(acts).resolve()) and meta["store"]["fingerprint"]
    assert meta["input_normalisation"]["kind"] == "mean_and_scale"
    w = load_file(str(root / "sae" / "sae.safetensors"))
    a = np.load(acts).astype(np.float64)
    x = a.transpose(0, 2, 3, 1).reshape(-1, U)
    f = _numpy_encode(w, x, "topk", k=meta["k"])
    x_hat = f @ w["W_dec"].astype(np.float64) + w["b_dec"]
    sse, sst = ((x_hat - x) ** 2).sum(), ((x - x.mean(0)) ** 2).sum()
    assert meta["explained_variance"] == pytest.approx(1 - sse / sst, abs=1e-4)
    assert meta["reconstruction_mse"] == pytest.approx(sse / x.size, rel=1e-3)
    assert meta["dead_features"] == int(((f > 0).sum(0) == 0).sum())
    assert meta["explained_variance"] > 0.8


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "jumprelu_log", "no_b_dec_in"])
def test_saelens_file_written_by_hand_gives_numpy_features(tmp_path, arch):
    """cfg.json + sae_weights.safetensors as SAELens writes them: the encoder's feature maps equal a
    plain NumPy encoder's, position by position."""
    from safetensors.numpy import save_file

    from dissect.sae import load_sae

    rng = np.random.default_rng(1)
    d_in, d_sae = 6, 20
    w = {"W_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32),
         "b_enc": rng.standard_normal(d_sae).astype(np.float32) * 0.1,
         "W_dec": rng.standard_normal((d_sae, d_in)).astype(np.float32),
         "b_dec": rng.standard_normal(d_in).astype(np.float32)}
    cfg = {"d_in": d_in, "d_sae": d_sae, "architecture": "standard", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "hook_name": "blocks.3.hook_resid_post"}
    act, k = "relu", None
    if arch == "topk":
        cfg.update(architecture="topk", k=3)
        act, k = "topk", 3
    elif arch.startswith("jumprelu"):
        cfg.update(architecture="jumprelu")
        thr = np.abs(rng.standard_normal(d_sae)).astype(np.float32)
        w.update({"log_threshold": np.log(thr)} if arch == "jumprelu_log" else {"threshold": thr})
        act = "jumprelu"
        w_np = dict(w, threshold=thr.astype(np.float64))
    elif arch == "no_b_dec_in":
        cfg.update(apply_b_dec_to_input=False)
    folder = tmp_path / "lens"
    folder.mkdir()
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    enc = load_sae(folder, units=d_in)
    a = rng.standard_normal((3, d_in, 4, 5)).astype(np.float32)
    import torch

    got = enc.encode_maps(torch.from_numpy(a)).numpy()
    assert got.shape == (3, d_sae, 4, 5)
    ref_w = {k2: v.astype(np.float64) for k2, v in (w_np if act == "jumprelu" else w).items()}
    want = _numpy_encode(ref_w, a.transpose(0, 2, 3, 1).reshape(-1, d_in).astype(np.float64), act, k=k,
                         apply_b_dec=arch != "no_b_dec_in").reshape(3, 4, 5, d_sae).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got > 0).sum() > 0 and enc.record["format"] == "saelens"


def test_width_mismatch_is_refused_naming_both_widths(world, tmp_path, capsys):
    root, store, acts, _ = world
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.load(acts)[:, :12])
    rc = main(["score", "--store", str(store), "--activations", str(narrow), "--out", str(tmp_path / "o"), "--name", "L",
               "--quiet", "--device", "cpu", "--no-report", "--sae", f"L={root / 'sae'}"])
    err = capsys.readouterr().err
    assert rc != 0 and "16 units" in err and "12 units" in err and "Traceback" not in err, err
    assert not (tmp_path / "o" / "L.sae").exists()


def test_sae_for_a_layer_not_dissected_is_refused(world, tmp_path):
    from dissect.config import DissectConfig
    from dissect.engine import score_activations

    root, store, acts, _ = world
    with pytest.raises(DissectError, match="not dissected"):
        score_activations(str(acts), str(store), DissectConfig(sae={"other": str(root / "sae")}, workers=0),
                          name="L")


def _train(out, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "dissect.cli", "sae", "train", "--activations", str(out.parent / "a.npy"),
                           "--out", str(out), "--epochs", "2", "--features", "24", "--k", "2", "--batch-size", "1024",
                           "--checkpoint-every", "7", "--chunk-mb", "1", "--threads", "1", "--device", "cpu", "-q", "-v"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    """Killed after the checkpoint of step 42: the same command ends with the weights, bit for bit, of
    an uninterrupted run (CPU, fixed seed)."""
    from safetensors.numpy import load_file

    rng = np.random.default_rng(3)
    # 300 images x 256 positions of 8 units (8 KiB an image): three 1 MiB chunks of 128 images, whose
    # positions are shuffled (32 steps each: the kill falls inside the first epoch's second chunk)
    np.save(tmp_path / "a.npy", rng.standard_normal((300, 8, 16, 16)).astype(np.float32) ** 2)
    whole = _train(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = _train(tmp_path / "resumed", {"DISSECT_SAE_FAULT_AFTER": "40"})  # saved at step 42, then killed
    assert killed.returncode == 75, killed.stderr
    assert (tmp_path / "resumed" / ".sae_state.pt").is_file() and not (tmp_path / "resumed" / "sae.json").exists()
    again = _train(tmp_path / "resumed")
    assert again.returncode == 0, again.stderr
    assert "resuming SAE training from" in again.stderr and "step 42" in again.stderr, again.stderr
    a, b = load_file(str(tmp_path / "whole" / "sae.safetensors")), load_file(str(tmp_path / "resumed" / "sae.safetensors"))
    assert sorted(a) == sorted(b) == ["W_dec", "W_enc", "b_dec", "b_enc"]
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert not (tmp_path / "resumed" / ".sae_state.pt").exists()


def test_without_safetensors_the_error_says_how_to_install(tmp_path, monkeypatch):
    from dissect.sae import SAEError, load_sae

    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": 2, "d_sae": 3}))
    (tmp_path / "sae_weights.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # import fails as when not installed
    with pytest.raises(SAEError, match=r"pip install 'broden-dissect\[sae\]'"):
        load_sae(tmp_path)


def test_feature_result_is_separate_and_named_and_the_report_says_feature(world):
    """OUT/L.sae beside OUT/L: settings say dissected=feature with the SAE's identity; the report
    names "feature N of F" and gives the SAE's summary; the units' result says unit."""
    from dissect.report.html import unit_name

    root, store, acts, _ = world
    _score(root, store, acts)
    _score(root, store, acts, "--sae", f"L={root / 'sae'}")
    units = json.loads((root / "out" / "L" / "result.json").read_text())
    feats = json.loads((root / "out" / "L.sae" / "result.json").read_text())
    assert units["settings"]["dissected"] == "unit" and "sae" not in units["settings"]
    assert len(units["units"]) == U and len(feats["units"]) == 8 * U
    s = feats["settings"]
    assert s["dissected"] == "feature" and s["sae"]["features"] == 8 * U and s["sae"]["units"] == U
    assert s["sae"]["format"] == "broden-dissect-sae" and s["sae"]["path"] == str((root / "sae").resolve())
    assert len(s["sae"]["weights_sha256"]) == 64 and s["sae"]["k"] == 2
    assert main(["report", str(root / "out"), "--store", str(store), "--quiet"]) == 0
    page = (root / "out" / "L.sae" / "report.html").read_text()
    assert f"of {8 * U} features are detectors" in page and "Features of a sparse autoencoder" in page
    assert any(f"feature {j} of {8 * U}" in page for j in range(1, 8 * U + 1))
    assert "unit 1<" in (root / "out" / "L" / "report.html").read_text()
    from dissect import DissectionResult

    both = DissectionResult.load(root / "out")
    assert both["L"].what == "unit" and both["L.sae"].what == "feature" and len(both["L.sae"].units) == 8 * U
    assert unit_name(1233, {"settings": {"dissected": "feature"}}, 8192) == "feature 1,234 of 8,192"
    assert unit_name(1233, {"settings": {}}, 8192) == "unit 1234"


def test_compare_units_features_rotation_and_concepts_only_in_features(world, tmp_path):
    """dissect compare of units, SAE features and a rotation of the same layer: one row each, the
    features named as such, and features_only.csv = the feature detectors' concepts minus the unit
    detectors' (computed here from the two result.json files)."""
    import csv

    root, store, acts, _ = world
    outs = {}
    for name, extra in (("units", []), ("feats", ["--sae", f"L={root / 'sae'}"]), ("rot", ["--rotate", "0"])):
        outs[name] = tmp_path / name
        assert main(["score", "--store", str(store), "--activations", str(acts), "--out", str(outs[name]), "--name", "L",
                     "--quantile", Q, "--iou-threshold", "0.5", "--quiet", "--device", "cpu", "--no-report", *extra]) == 0
    assert main(["compare", str(outs["units"]), str(outs["feats"]), str(outs["rot"]), "--out", str(tmp_path / "cmp")]) == 0
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    runs = {r["run"] for r in rows}
    assert len(runs) == 3 and any(r.endswith("SAE features") for r in runs) and any("rotated" in r for r in runs)

    def concepts(folder):
        doc = json.loads((folder / "result.json").read_text())
        return {(u["category"], u["label"]) for u in doc["units"] if u["iou"] >= 0.5}

    want = concepts(outs["feats"] / "L.sae") - concepts(outs["units"] / "L")  # the rotation's are not units
    got = {(r["category"], r["label"]) for r in csv.DictReader((tmp_path / "cmp" / "features_only.csv").open())}
    assert got == want and len(want) >= 0.7 * K
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Concepts only in features" in page and "mean best IoU" in page


def test_explain_features(world, tmp_path):
    """dissect explain on an SAE result: every feature explained; a length-1 explanation of a feature
    whose best label reaches IoU 0.5 is that label, with the IoU that the dissection measured."""
    import csv

    root, store, acts, _ = world
    out = tmp_path / "ex"
    assert main(["explain", "--store", str(store), "--activations", str(acts), "--out", str(out), "--name", "L",
                 "--sae", f"L={root / 'sae'}", "--length", "1", "--quantile", Q, "--quiet", "--device", "cpu",
                 "--no-report", "--workers", "0"]) == 0
    doc = json.loads((out / "L.sae" / "result.json").read_text())
    rows = list(csv.DictReader((out / "L.sae" / "explanations.csv").open()))
    assert len(rows) == 8 * U
    by_unit = {int(r["unit"]): r for r in rows}
    checked = 0
    for u in doc["units"]:
        if u["iou"] >= 0.5:
            r = by_unit[u["unit"]]
            assert u["label"] in r["formula"] and float(r["iou"]) == pytest.approx(u["iou"], abs=1e-6), (u, r)
            checked += 1
    assert checked >= 0.8 * K


def test_train_from_a_model_then_dissect_its_features(synthetic_store, tmp_path):
    """--store/--model/--layer: the layer's units are dissected with their cache kept (OUT/units), the
    SAE trains on every position of that cache; `dissect run --sae` then dissects its features."""
    from dissect_helpers import TINY_MODEL_SOURCE
    from broden_builder.store.reader import BrodenStore

    tiny = tmp_path / "tiny.py"
    tiny.write_text(TINY_MODEL_SOURCE)
    sae = tmp_path / "sae"
    assert main(["sae", "train", "--store", str(synthetic_store), "--model", f"{tiny}:tiny", "--layer", "features.2",
                 "--features", "20", "--k", "2", "--epochs", "2", "--out", str(sae), "--device", "cpu", "--threads", "1",
                 "-q"]) == 0
    meta = json.loads((sae / "sae.json").read_text())
    units = json.loads((sae / "units" / "features.2" / "result.json").read_text())
    n = len(BrodenStore(synthetic_store).rows)
    assert meta["layer"] == "features.2" and meta["model"] == units["model"] and meta["store"] == units["store"]
    assert meta["units"] == 5 and meta["features"] == 20 and meta["samples"]["total"] == n * 8 * 8
    out = tmp_path / "out"
    assert main(["run", "--store", str(synthetic_store), "--model", f"{tiny}:tiny", "--layer", "features.2", "--sae",
                 f"features.2={sae}", "--out", str(out), "--device", "cpu", "--quiet", "--no-report"]) == 0
    feats = json.loads((out / "features.2.sae" / "result.json").read_text())
    assert len(feats["units"]) == 20 and feats["settings"]["sae"]["units"] == 5
    assert not (out / "features.2").exists()


def test_sparse_gradients_equal_the_dense_formulation():
    """The training's gradient (through the k selected features and AuxK's k_aux only) equals autograd
    through the dense formulas of Gao et al. 2024 (z = scatter of TopK(ReLU), x_hat = z W_dec + b_pre)."""
    import torch

    from dissect.sae._model import TopKSAE

    m = TopKSAE(7, 40, 3, torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        m.b_enc.normal_(generator=torch.Generator().manual_seed(1))
        m.b_pre.normal_(generator=torch.Generator().manual_seed(2))
    x = torch.randn(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    dead = torch.rand(40, generator=torch.Generator().manual_seed(4)) < 0.5
    pre, idx, val, xh = m(x)
    ((xh - x).pow(2).mean() + m.aux_loss(x, xh, pre, dead, 5) / 32).backward()
    sparse = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    pre = (x - m.b_pre) @ m.W_enc + m.b_enc
    top = torch.topk(pre, 3, dim=1)
    z = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    xh = z @ m.W_dec + m.b_pre
    ia = torch.topk(pre.detach().masked_fill(~dead, float("-inf")), 5, dim=1).indices
    za = torch.zeros_like(pre).scatter(1, ia, torch.relu(pre.gather(1, ia)))
    ((xh - x).pow(2).mean() + (za @ m.W_dec - (x - xh).detach()).pow(2).mean() / 32).backward()
    for n, p in m.named_parameters():
        assert p.grad.abs().max() > 0 and torch.allclose(p.grad, sparse[n], atol=1e-12), n
