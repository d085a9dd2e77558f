"""The permutation null (issue 20): p-values, q-values and significance of units.

A store and activations are built here with known answers (oracles written in this file):
- exact detectors of small objects (a unit = one object label's mask, IoU 1): significant;
- a *position* unit firing on the top rows of every image, against a ``sky`` label filling the
  top rows of most images: IoU well above 0.04, yet every permuted pairing gives the same counts
  (the mask is the same in every image), so it must not be significant;
- noise units (random activations): at most 2 of 30 significant;
- inside the null's range the p-value equals (1 + #{null >= observed}) / (N + 1) computed from a
  plain loop in this file that reruns the Tally on permuted activations, with the permutations
  drawn here from the documented rule numpy.random.default_rng([seed, k]).permutation(n);
- the same seed gives the same p-values with other batch sizes and workers, after a kill and
  resume, and under a 2-process torchrun.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from broden_builder.store.reader import BrodenStore
from broden_builder.store.writer import LabelSpec, StoreWriter
from broden_builder.torch_dataset import BrodenDataset, collate_broden
from dissect import DissectConfig
from dissect.errors import DissectError
from dissect.results import load_result
from dissect.engine import score_activations
from dissect.stats import Tally

REPO = Path(__file__).resolve().parents[1]
SEG = 16
TOP = 4  # rows the position unit fires on
SKY_ROWS = 6
SKY = 1  # label numbers: sky, then the objects 2 .. 1 + objects, then the scenes
N_NULL = 100


def _write_store(root: Path, images: int, objects: int, per_image: int, seed: int) -> dict:
    """A store of ``images`` rows, seg SEG x SEG: ``sky`` (object layer 1) on the top SKY_ROWS rows of
    80% of the images; ``objects`` small objects, 3 x 3 squares on a grid below the sky (layer 2),
    ``per_image`` per image; one of three scenes per image. Returns {image row: {label: bool [SEG, SEG]}}."""
    rng = np.random.default_rng(seed)
    w = StoreWriter(root)
    cells = [(y, x) for y in range(SKY_ROWS, SEG - 2, 3) for x in range(0, SEG - 2, 3)]
    truth = {}
    for i in range(images):
        sky = np.zeros((SEG, SEG), np.int32)
        if rng.random() < 0.8:
            sky[:SKY_ROWS] = SKY
        obj = np.zeros((SEG, SEG), np.int32)
        for n, c in zip(rng.choice(objects, per_image, replace=False),
                        rng.choice(len(cells), per_image, replace=False)):
            y, x = cells[c]
            obj[y:y + 3, x:x + 3] = 2 + n
        w.write_row(f"i/{i:04d}.jpg", "train", (SEG, SEG), (SEG, SEG), {"object": [sky, obj]},
                    {"scene": [2 + objects + int(rng.integers(3))]}, rgb=np.full((SEG, SEG, 3), 127, np.uint8))
        truth[f"i/{i:04d}.jpg"] = {"sky": sky, "obj": obj}
    labels = [LabelSpec(SKY, "sky")] + [LabelSpec(2 + n, f"thing{n}") for n in range(objects)] + \
        [LabelSpec(2 + objects + s, f"scene{s}-s") for s in range(3)]
    w.finalize(labels, {"format": "broden"}, "readme\n")
    store = BrodenStore(root)
    return {r.index: truth[r.image] for r in store.rows}


def _activations(truth: dict, detectors: int, noise: int, position: bool, seed: int) -> np.ndarray:
    """float32 [n, units, SEG, SEG]: unit k < detectors is 1 exactly on object k's pixels (else 0); then
    ``noise`` units of Gaussian noise; then (``position``) one unit that is 1 on the top TOP rows."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    acts = np.zeros((n, detectors + noise + int(position), SEG, SEG), np.float32)
    for i in range(n):
        for k in range(detectors):
            acts[i, k] = truth[i]["obj"] == 2 + k
    acts[:, detectors: detectors + noise] = rng.normal(size=(n, noise, SEG, SEG))
    if position:
        acts[:, -1, :TOP] = 1.0
    return acts


# a quantile above the position unit's share of pixels: thresholds 0 for the 0/1 units (mask = where 1)
CFG = dict(quantile=0.3, device="cpu", quiet=True, null=N_NULL, seed=7, batch_size=16, workers=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """80 images, 12 objects; units: 10 exact detectors, 30 noise, 1 position unit; scored with --null 100."""
    root = tmp_path_factory.mktemp("null") / "store"
    truth = _write_store(root, 80, 12, 3, seed=0)
    acts = _activations(truth, 10, 30, True, seed=1)
    res = score_activations(acts, root, DissectConfig(**CFG), out=root.parent / "out", name="acts")
    return root, acts, res


def test_exact_detectors_are_significant(small):
    _, _, res = small
    for u in res.units[:10]:
        assert u["iou"] == 1.0 and u["label"] == f"thing{u['unit_index']}"
        assert u["q_value"] <= 0.01 and u["significant"], u
        assert u["p_method"] == "tail" and u["p_value"] < 1 / (N_NULL + 1)  # beyond the null's range
        assert u["null_iou"] < 0.5 and u["null_iou"] <= u["null_iou_95"]


def test_position_unit_is_not_significant(small):
    root, acts, res = small
    u = res.units[-1]
    assert u["label"] == "sky" and u["iou"] > 0.04 and u["iou_detector"]  # the paper's rule calls it a detector
    # oracle: the mask is the same in every image, so every pairing has the same counts: p = 1
    assert u["p_value"] == 1.0 and not u["significant"]


def test_noise_units_are_rarely_significant(small):
    _, _, res = small
    noise = res.units[10:40]
    assert sum(u["significant"] for u in noise) <= 2
    assert all(u["p_method"] == "permutation" for u in noise if u["p_value"] > 1 / (N_NULL + 1))


def _plain_null(root: Path, acts: np.ndarray, thresholds: np.ndarray, seed: int, count: int) -> np.ndarray:
    """[count, U] best IoU of each permuted pairing: for permutation k (numpy default_rng([seed, k]) over
    the n positions), the masks of image i meet the labels of image perm[i]; computed by rerunning the
    Tally on the activations moved to their partner (label image j gets the activations of perm^-1(j))."""
    store = BrodenStore(root)
    cats = list(store.categories)
    numbers = sorted(l.number for l in store.labels)
    primary = {n: store.primary_category(n) for n in numbers}
    ds = BrodenDataset(store, categories=cats, with_images=False)
    batches = [collate_broden([ds[i] for i in range(lo, min(len(ds), lo + 10))]) for lo in range(0, len(ds), 10)]
    out = np.zeros((count, acts.shape[1]))
    T = torch.from_numpy(thresholds)
    for k in range(count):
        perm = np.random.default_rng([seed, k]).permutation(len(ds))
        moved = np.empty_like(acts)
        moved[perm] = acts  # label image perm[i] gets the masks of image i
        t = Tally(numbers, cats, store.image_level_categories, primary, units=acts.shape[1])
        for b in batches:
            t.add(torch.from_numpy(moved[b["index"].numpy()]), T, b["seg"])
        out[k] = t.iou("original").amax(1).numpy()
    return out


def test_p_values_equal_a_plain_permutation_loop(small):
    root, acts, res = small
    units = list(range(10, 41))  # noise and position units: inside the null's range
    null = _plain_null(root, acts[:, units], res.thresholds[units], CFG["seed"], N_NULL)
    for a, u in enumerate(units):
        obs = res.units[u]["iou"]
        exceed = int((null[:, a] >= obs).sum())
        if exceed:
            assert res.units[u]["p_value"] == (1 + exceed) / (N_NULL + 1), u
            assert res.units[u]["p_method"] == "permutation"
        assert res.units[u]["null_iou"] == pytest.approx(null[:, a].mean(), abs=1e-12)
        assert res.units[u]["null_iou_95"] == pytest.approx(np.quantile(null[:, a], 0.95), abs=1e-12)


def test_result_files_and_detector_rules(small, tmp_path):
    root, acts, res = small
    header = (res.path / "tally.csv").read_text().splitlines()[0].split(",")
    assert header[-4:] == ["null-iou", "null-iou-95", "p-value", "q-value"]
    doc = json.loads((res.path / "result.json").read_text())
    assert {k: doc["settings"][k] for k in ("null", "seed", "alpha", "detector")} == \
        {"null": N_NULL, "seed": 7, "alpha": 0.05, "detector": "iou"}
    assert doc["summary"]["significant"] == sum(u["significant"] for u in res.units)
    assert "significant against the permutation null" in res.summary_line()
    from dissect.report import write_reports

    write_reports(res.path.parent, store=root, quiet=True, results=[res], layers=[res.path.name])
    page = next(res.path.glob("*.html")).read_text()
    assert f"<b>{doc['summary']['significant']}</b> units are significant against the permutation null" in page
    # --detector significant: the position unit is no longer a detector; both: IoU and significance
    sig = score_activations(acts, root, DissectConfig(**dict(CFG, detector="significant", null=20)))
    assert not sig.units[-1]["detector"] and all(u["detector"] for u in sig.units[:10])
    assert sig.summary["detectors"] == sum(u["significant"] for u in sig.units)
    with pytest.raises(DissectError, match="needs the permutation null"):
        DissectConfig(detector="both")


def test_512_units_with_50_exact_detectors(tmp_path):
    root = tmp_path / "store"
    truth = _write_store(root, 100, 50, 5, seed=3)
    acts = _activations(truth, 50, 462, False, seed=4)
    res = score_activations(acts, root, DissectConfig(**dict(CFG, batch_size=25)))
    assert all(u["q_value"] <= 0.05 for u in res.units[:50]), [u["q_value"] for u in res.units[:50]]
    assert sum(u["significant"] for u in res.units[50:]) <= 25  # BH at 5%: few false discoveries


# ---------------------------------------------------------------------------- determinism
def _cli(args, env_extra=None, torchrun=False):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env_extra or {}))
    head = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                               if torchrun else []) + ["-m", "dissect.cli"]
    return subprocess.run(head + args, env=env, capture_output=True, text=True, timeout=400)


def _p(out: Path) -> list:
    return [(u["p_value"], u["q_value"], u["p_method"]) for u in load_result(out / "acts").units]


def test_same_seed_same_p_values_across_batches_workers_resume_and_ranks(small, tmp_path):
    root, acts, res = small
    path = tmp_path / "acts.npy"
    np.save(path, acts[:, 8:24])  # 2 detectors, 14 noise units
    common = ["score", "--store", str(root), "--activations", str(path), "--quantile", "0.3", "--device", "cpu",
              "--quiet", "--no-report", "--null", "30", "--seed", "5"]
    a = _cli(common + ["--out", str(tmp_path / "a"), "--batch-size", "16", "--workers", "0"])
    assert a.returncode == 0, a.stderr[-3000:]
    ref = _p(tmp_path / "a")
    b = _cli(common + ["--out", str(tmp_path / "b"), "--batch-size", "7", "--workers", "2"])
    assert b.returncode == 0, b.stderr[-3000:]
    assert _p(tmp_path / "b") == ref
    killed = common + ["--out", str(tmp_path / "k"), "--batch-size", "8", "--workers", "0", "--checkpoint-every", "1"]
    assert _cli(killed, {"DISSECT_FAULT_AFTER": "2:5"}).returncode == 75  # killed in pass 2
    r = _cli(killed)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _p(tmp_path / "k") == ref
    d = _cli(common + ["--out", str(tmp_path / "d"), "--batch-size", "16", "--workers", "0"], torchrun=True)
    assert d.returncode == 0, d.stderr[-3000:]
    assert _p(tmp_path / "d") == ref
    other = _cli(common[:-1] + ["6", "--out", str(tmp_path / "e"), "--batch-size", "16", "--workers", "0"])
    assert other.returncode == 0 and _p(tmp_path / "e") != ref  # another seed: other permutations
