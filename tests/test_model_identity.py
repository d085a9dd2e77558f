"""Which model a result belongs to: a file.py model is built the same on every call (seeded), its
weights are in the resume/cache keys and result.json (a state_dict sha256 when no weights file names
them), a result is never reused with another model (explain, ablate, describe), and no command writes
its output into the store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dissect.cli import main
from dissect_helpers import TINY_MODEL_SOURCE

REPO = Path(__file__).resolve().parents[1]

#: Tiny (from dissect_helpers) built without a seed of its own, and built from a seed the environment picks
#: (a function whose weights change between calls without its file changing: a download, a file it reads)
EXTRA_SOURCE = TINY_MODEL_SOURCE + '''

def unseeded():
    return Tiny()


def external():
    import os
    torch.manual_seed(int(os.environ.get("TINY_SEED", "1")))
    return Tiny()
'''
COMMON = ["--device", "cpu", "--batch-size", "4", "--workers", "0", "--quiet", "--no-report"]


@pytest.fixture()
def models(tmp_path) -> Path:
    p = tmp_path / "tinymodels.py"
    p.write_text(EXTRA_SOURCE)
    return p


def _tiny_class():
    ns: dict = {}
    exec(compile(EXTRA_SOURCE, "independent.py", "exec"), ns)
    return ns["Tiny"]


def _same(a: Path, b: Path) -> None:
    for name in ("iou.npy", "thresholds.npy"):
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    assert (a / "tally.csv").read_text() == (b / "tally.csv").read_text()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------- F11: file.py models seeded
def test_file_py_function_is_called_after_seed_0(models):
    from dissect.capture import load_model

    a = load_model(f"{models}:unseeded")
    torch.manual_seed(123)  # whatever the global generator holds in between
    b = load_model(f"{models}:unseeded")
    torch.manual_seed(0)
    oracle = _tiny_class()()  # the class built by hand after seed 0, as for --weights none
    for (k, va), vb, vo in zip(a.module.state_dict().items(), b.module.state_dict().values(), oracle.state_dict().values()):
        assert torch.equal(va, vo) and torch.equal(vb, vo), k
    # recorded as what it is: not claimed random, not claimed a checkpoint; the weights' sha256 names them
    assert not a.random_weights and a.identity["weights"] == "as built by the function (no --weights)"
    assert a.identity["state_sha256"] == b.identity["state_sha256"] and len(a.identity["state_sha256"]) == 64
    os.environ["TINY_SEED"] = "2"
    try:
        other = load_model(f"{models}:external")
    finally:
        del os.environ["TINY_SEED"]
    assert other.identity["state_sha256"] != load_model(f"{models}:external").identity["state_sha256"]
    assert load_model(f"{models}:unseeded", "none").random_weights  # --weights none: still said random


def test_two_runs_of_an_unseeded_file_py_model_are_identical(models, synthetic_store, tmp_path):
    import json

    for out in ("a", "b"):
        assert main(["run", "--store", str(synthetic_store), "--model", f"{models}:unseeded", "--layer", "features",
                     "--out", str(tmp_path / out)] + COMMON) == 0
    _same(tmp_path / "a" / "features", tmp_path / "b" / "features")
    doc = json.loads((tmp_path / "a" / "features" / "result.json").read_text())
    assert doc["model"]["random_weights"] is False and doc["model"]["weights"].startswith("as built by the function")
    assert doc["model"]["state_sha256"] == json.loads((tmp_path / "b" / "features" / "result.json").read_text())[
        "model"]["state_sha256"]


def _cli(args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "dissect.cli"] + args, env=env, capture_output=True, text=True,
                          timeout=300)


def test_killed_run_is_not_resumed_with_other_weights(models, synthetic_store, tmp_path):
    """Killed in pass 1 with the weights of seed 1, rerun when the function builds seed 2's: the result
    must be a fresh run of seed 2's model, not a mix of both."""
    args = ["run", "--store", str(synthetic_store), "--model", f"{models}:external", "--layer", "features",
            "--checkpoint-every", "1"] + COMMON
    out, fresh = tmp_path / "killed", tmp_path / "fresh"
    p = _cli(args + ["--out", str(out)], {"TINY_SEED": "1", "DISSECT_FAULT_AFTER": "1:6"})
    assert p.returncode == 75, p.stderr[-2000:]
    assert (out / ".dissect_state" / "rank0of1.pt").is_file()
    p = _cli(args + ["--out", str(out)], {"TINY_SEED": "2"})
    assert p.returncode == 0, p.stderr[-2000:]
    p = _cli(args + ["--out", str(fresh)], {"TINY_SEED": "2"})
    assert p.returncode == 0, p.stderr[-2000:]
    _same(fresh / "features", out / "features")


# ---------------------------------------------------------------------------- F6: a result reused with its model only
@pytest.fixture()
def dissected(models, synthetic_store, tmp_path) -> tuple:
    """OUT/features dissected with a checkpoint (Tiny after seed 5)."""
    torch.manual_seed(5)
    ckpt = tmp_path / "trained.pth"
    torch.save(_tiny_class()().state_dict(), ckpt)
    out = tmp_path / "out"
    assert main(["run", "--store", str(synthetic_store), "--model", f"{models}:tiny", "--weights", str(ckpt),
                 "--layer", "features", "--out", str(out)] + COMMON) == 0
    return out, ckpt


def test_explain_refuses_a_result_of_other_weights(dissected, models, synthetic_store, capsys):
    out, ckpt = dissected
    capsys.readouterr()
    rc = main(["explain", "--store", str(synthetic_store), "--model", f"{models}:tiny", "--weights", "none",
               "--layer", "features", "--out", str(out), "--length", "1"] + COMMON)
    assert rc == 1
    err = _error_line(capsys)
    assert str(out / "features") in err and str(ckpt.resolve()) in err and "none (random init" in err
    assert "delete" in err and "--out" in err
    assert not (out / "features" / "explanations.csv").exists()
    # the same weights (the same bytes at another path) are the same model: reused
    copy = ckpt.parent / "copy.pth"
    copy.write_bytes(ckpt.read_bytes())
    assert main(["explain", "--store", str(synthetic_store), "--model", f"{models}:tiny", "--weights", str(copy),
                 "--layer", "features", "--out", str(out), "--length", "1"] + COMMON) == 0
    assert (out / "features" / "explanations.csv").is_file()


def test_explain_api_refuses_another_module(dissected):
    from dissect.explain.run import explain_result
    from dissect.results import ResultsError

    out, _ = dissected
    torch.manual_seed(9)
    with pytest.raises(ResultsError, match="was dissected with"):
        explain_result(out / "features", model=_tiny_class()(), write=False)


def test_ablate_and_describe_refuse_a_result_of_other_weights(dissected, models, synthetic_store, tmp_path, capsys):
    out, ckpt = dissected
    data = tmp_path / "data"
    for c in ("a", "b", "c"):
        (data / c).mkdir(parents=True)
        Image.new("RGB", (64, 64), (40, 80, 120)).save(data / c / "x.png")
    before = sorted(p.name for p in (out / "features").iterdir())
    capsys.readouterr()
    rc = main(["ablate", "--model", f"{models}:tiny", "--layer", "features", "--units", "1", "--data", str(data),
               "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 1 and str(ckpt.resolve()) in _error_line(capsys)
    rc = main(["describe", "--store", str(synthetic_store), "--model", f"{models}:tiny", "--weights", "none",
               "--layer", "features", "--clip", "hf:never-loaded", "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 1 and str(ckpt.resolve()) in _error_line(capsys)
    assert sorted(p.name for p in (out / "features").iterdir()) == before  # nothing written


# ---------------------------------------------------------------------------- F10: never an output inside the store
def _listing(root: Path) -> list:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_no_command_writes_its_output_into_the_store(models, synthetic_store, tmp_path, capsys):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    link = tmp_path / "link"
    link.symlink_to(store, target_is_directory=True)
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).random((60, 2, 4, 4)).astype(np.float32))
    before = _listing(store)
    model = ["--model", f"{models}:tiny", "--weights", "none", "--layer", "features"]
    commands = [
        ["run", "--store", str(store), "--out", str(store)] + model,
        ["run", "--store", str(store), "--out", str(store / "images")] + model,
        ["run", "--store", str(store), "--out", str(link / "results")] + model,  # through a symlink
        ["score", "--store", str(link), "--activations", str(acts), "--out", str(store / "new")],
        ["explain", "--store", str(store), "--activations", str(acts), "--out", str(store / "x")],
        ["describe", "--store", str(store), "--activations", str(acts), "--clip", "hf:never", "--out", str(store)],
        ["sae", "train", "--store", str(store), "--activations", str(acts), "--out", str(store / "sae")],
        ["report", str(store), "--store", str(store)],
    ]
    for args in commands:
        rc = main(args + (["--quiet"] if args[0] != "sae" else []))
        assert rc == 1, args
        err = _error_line(capsys)
        assert ("inside the store" in err or "is the store folder" in err) and str(store.name) in err, (args, err)
    assert _listing(store) == before  # not a file added or touched (no lock, no cache, no result)
    from broden_builder import BrodenStore

    assert len(BrodenStore(store).rows) == 60


def test_a_result_folder_never_replaces_the_store(models, synthetic_store, tmp_path, capsys):
    """OUT/<layer>/ is replaced whole when written: a store at that path (or below it) is refused first."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(synthetic_store, work / "features" / "store")
    acts = tmp_path / "features.npy"
    np.save(acts, np.random.default_rng(0).random((60, 2, 4, 4)).astype(np.float32))
    before = _listing(work)
    for args in (
        ["run", "--store", str(work / "features" / "store"), "--model", f"{models}:tiny", "--weights", "none",
         "--layer", "features", "--out", str(work)],
        ["score", "--store", str(work / "features" / "store"), "--activations", str(acts), "--out", str(work)],
    ):
        assert main(args + ["--quiet"]) == 1, args
        err = _error_line(capsys)
        assert "would replace the store" in err and str(work / "features") in err, err
    assert _listing(work) == before


def test_describe_never_writes_into_its_probe_image_folder(models, tmp_path, capsys):
    """describe --images DIR reads DIR recursively: an --out inside it is refused before anything is written."""
    from PIL import Image

    images = tmp_path / "probe"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(images / f"{i}.png")
    before = _listing(images)
    for out in (images, images / "described"):
        rc = main(["describe", "--images", str(images), "--model", f"{models}:tiny", "--weights", "none",
                   "--layer", "features", "--clip", "hf:never", "--out", str(out), "--quiet"])
        assert rc == 1
        err = _error_line(capsys)
        assert ("inside the image folder" in err or "is the image folder " in err) and "probe" in err, err
        assert "folder folder" not in err
    assert _listing(images) == before
