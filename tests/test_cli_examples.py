"""Every ``dissect`` subcommand's documented example, end to end, as a new user runs it (issue 24, item 2).

Each command runs as its own process (``python -m dissect``) with stdout and stderr going to
files, as on a cluster, on the 60-image synthetic store and a small file.py model (the
documented examples name resnet18, whose weights are not offline). Each asserts its outputs
against hand-computed values or a plain re-computation, and that stderr holds no warning,
error or traceback.
"""
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
from PIL import Image

from dissect_helpers import TINY_MODEL_SOURCE

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet values (the default)


def _cli(tmp: Path, *args: str, package: str = "dissect", ok: bool = True) -> tuple:
    """Run ``python -m PACKAGE ARGS`` with output to log files; returns (stdout, stderr)."""
    out, err = tmp / "stdout.log", tmp / "stderr.log"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(out, "w") as o, open(err, "w") as e:
        rc = subprocess.run([sys.executable, "-m", package, *args], stdout=o, stderr=e, env=env, cwd=tmp,
                            timeout=600).returncode
    text, etext = out.read_text(), err.read_text()
    if ok:
        assert rc == 0, f"{args}: exit {rc}\n{etext}"
        low = "\n".join(line for line in etext.lower().splitlines() if "has random weights (" not in line)  # the expected notice
        for bad in ("traceback", "warning", "error", "bug"):
            assert bad not in low, f"{args}: {bad!r} on stderr:\n{etext}"
    return text, etext


def _rows(path: Path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def session(synthetic_store, tmp_path_factory):
    """A work folder holding tiny.py, with `dissect run` done once into out/ (shared by the later examples)."""
    tmp = tmp_path_factory.mktemp("cli_examples")
    (tmp / "tiny.py").write_text(TINY_MODEL_SOURCE)
    return tmp, synthetic_store


def _tiny():
    ns: dict = {}
    exec(compile(TINY_MODEL_SOURCE, "tiny.py", "exec"), ns)
    return ns["tiny"]()


def test_run_then_report(session):
    tmp, store = session
    text, _ = _cli(tmp, "run", "--store", str(store), "--model", "tiny.py:tiny", "--weights", "none", "--layer",
                   "features", "--out", "out", "--device", "cpu", "--workers", "0")
    d = tmp / "out" / "features"
    doc = json.loads((d / "result.json").read_text())
    assert doc["model"]["random_weights"] is True  # --weights none on a file.py model is a random model
    assert doc["settings"]["input_size"] == [64, 64]  # the store's image size
    assert sorted(int(r["unit"]) for r in _rows(d / "tally.csv")) == [1, 2, 3, 4, 5]  # Tiny's features: 5 channels
    assert (d / "report.html").is_file() and "report: " in text and "results in out" in text
    index = tmp / "out" / "index.html"
    before = index.stat().st_mtime_ns
    text, _ = _cli(tmp, "report", "out")
    assert text.strip() == f"report: {Path('out') / 'index.html'}" and index.stat().st_mtime_ns >= before
    assert "features" in index.read_text()


def test_score(session):
    tmp, store = session
    n = sum(1 for _ in open(store / "index.csv")) - 1
    acts = np.random.default_rng(0).standard_normal((n, 4, 3, 3)).astype(np.float32)
    np.save(tmp / "feats.npy", acts)
    text, _ = _cli(tmp, "score", "--store", str(store), "--activations", "feats.npy", "--out", "scored",
                   "--workers", "0")
    d = tmp / "scored" / "feats"
    assert len(_rows(d / "tally.csv")) == 4 and (d / "report.html").is_file()
    assert text.splitlines()[0].startswith("feats:") and "results in" in text


def test_layers(session):
    tmp, _ = session
    text, _ = _cli(tmp, "layers", "--model", "tiny.py:tiny", "--input-size", "64")
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line and not line.startswith("#")}
    # 64 -> conv stride 4, padding 1, kernel 3 -> 16 -> conv stride 2 -> 8; 5 channels
    assert "1x5x8x8" in rows["features"] and "1x6x16x16" in rows["features.0"] and "1x3" in rows["head"]


def test_explain_writes_its_report(session):
    tmp, store = session
    text, _ = _cli(tmp, "explain", "--store", str(store), "--model", "tiny.py:tiny", "--weights", "none",
                   "--layer", "features", "--out", "expl", "--device", "cpu", "--workers", "0", "--length", "2")
    d = tmp / "expl" / "features"
    rows = _rows(d / "explanations.csv")
    assert [int(r["unit"]) for r in rows] == [1, 2, 3, 4, 5]
    assert f"report: {Path('expl') / 'index.html'}" in text
    page = (d / "report.html").read_text()
    assert "explanations.csv" in page  # the report shows the formulas it was written for
    shown = [r["formula"] for r in rows if r["formula"]]
    assert shown and all(f.split(" ")[0] in page for f in shown)


def test_compare(session):
    tmp, store = session
    if not (tmp / "out" / "features" / "result.json").is_file():
        test_run_then_report(session)
    if not (tmp / "scored" / "feats" / "result.json").is_file():
        test_score(session)
    text, _ = _cli(tmp, "compare", "out", "scored", "--out", "cmp")
    lines = text.splitlines()  # the runs side by side (a header and a row per layer), then the page
    assert lines[0].split()[:4] == ["run", "layer", "units", "detectors"] and len(lines) == 4
    assert lines[-1].startswith("comparison: ")
    rows = _rows(tmp / "cmp" / "compare.csv")
    assert {r["layer"] for r in rows} == {"features", "feats"}
    assert (tmp / "cmp" / "compare.html").is_file()


def _class_folder(root: Path) -> Path:
    rng = np.random.default_rng(5)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_ablate_uses_the_dissection_preprocessing(session):
    """Tiny's head only fits 64 x 64 inputs: the dissection ran at the store's 64 px, and ablate
    must feed the same size and mean/std (it used 224 and failed, or scored silently wrong)."""
    tmp, store = session
    if not (tmp / "out" / "features" / "result.json").is_file():
        test_run_then_report(session)
    data = _class_folder(tmp / "val")
    text, _ = _cli(tmp, "ablate", "--model", "tiny.py:tiny", "--weights", "none", "--layer", "features",
                   "--units", "1,2", "--data", "val", "--out", "out")
    assert "preprocessing: 64x64" in text
    rows = _rows(tmp / "out" / "features" / "ablation_units_1_2_zero.csv")
    # oracle: a plain forward pass of the same model on the images normalised with ImageNet's mean/std
    model = _tiny().eval()
    right_before = right_after = 0
    for k, c in enumerate(("a", "b", "c")):
        for i in range(4):
            x = torch.tensor(np.asarray(Image.open(data / c / f"{i}.png"), np.float32) / 255).permute(2, 0, 1)
            x = ((x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))[None]
            with torch.no_grad():
                f = model.features(x)
                right_before += int(model.head(f.flatten(1)).argmax(1) == k)
                f[:, :2] = 0
                right_after += int(model.head(f.flatten(1)).argmax(1) == k)
    total = rows[-1]
    assert int(total["images"]) == 12
    assert float(total["accuracy_before"]) == pytest.approx(right_before / 12, abs=1e-6)
    assert float(total["accuracy_after"]) == pytest.approx(right_after / 12, abs=1e-6)


def test_python_m_entry_points(tmp_path):
    text, _ = _cli(tmp_path, "--version")
    assert text.startswith("dissect (broden-dissect) ")
    text, _ = _cli(tmp_path, "--help", package="broden_builder")
    assert text.startswith("usage: broden ")


def test_run_config_file_whose_keys_are_dissect_config_fields(session):
    """`dissect run --config run.yaml`: the file's settings reach result.json; an option on the command
    line wins; an unknown key or a Python-only one is refused naming the file and the key."""
    import dataclasses

    from dissect.config import PYTHON_ONLY, DissectConfig

    tmp, store = session
    (tmp / "run.yaml").write_text("quantile: 0.02\ntop_k: 3\ncategories: [object, color]\nupsample: nearest\n"
                                  "checkpoint_every: 0\nquantile_memory: 1000000\nbatch_size: 16\n")
    base = ["run", "--store", str(store), "--model", "tiny.py:tiny", "--weights", "none", "--layer", "features",
            "--device", "cpu", "--workers", "0", "--no-report", "--config", "run.yaml"]
    _cli(tmp, *base, "--out", "cfg", "--top-k", "4")
    s = json.loads((tmp / "cfg" / "features" / "result.json").read_text())["settings"]
    assert (s["quantile"], s["top_k"], sorted(s["categories"]), s["upsample"], s["batch_size"]) == \
        (0.02, 4, ["color", "object"], "nearest", 16)
    (tmp / "bad.yaml").write_text("quantil: 0.02\n")
    _, err = _cli(tmp, *base[:-1], "bad.yaml", "--out", "bad", ok=False)
    assert "bad.yaml: unknown setting 'quantil'; did you mean 'quantile'" in err
    (tmp / "bad.yaml").write_text("transform: x\n")
    _, err = _cli(tmp, *base[:-1], "bad.yaml", "--out", "bad", ok=False)
    assert "bad.yaml: 'transform' can only be given in Python" in err
    (tmp / "bad.yaml").write_text("quantile: 2\n")
    _, err = _cli(tmp, *base[:-1], "bad.yaml", "--out", "bad", ok=False)
    assert "bad.yaml: quantile must lie in (0, 1), got 2" in err
    # every field that is a value can be written in the file
    named = {f.name for f in dataclasses.fields(DissectConfig)} - set(PYTHON_ONLY)
    assert {"quantile", "iou_threshold", "batch_size", "categories", "input_size", "cache_dtype"} <= named


def test_broden_subcommands_end_to_end(tmp_path):
    """`broden build|validate|stats|find|add|build --plan` as a user runs them, output to log files;
    outputs checked against the recipe's counts and the images added."""
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"size": 32, "segmentation_size": 16, "min_frequency": 1,
                                                     "sources": [{"type": "synthetic", "count": 12}]}))
    text, err = _cli(tmp_path, "build", "r.yaml", "--out", "S", package="broden_builder")
    assert "12 images written" in text and "write: start, 12 img" in err and "write: 12/12 img (100%)" in err
    text, _ = _cli(tmp_path, "validate", "S", package="broden_builder")
    assert "valid" in text.lower()
    text, _ = _cli(tmp_path, "stats", "S", package="broden_builder")
    assert text.startswith("S: 12 images")
    from broden_builder import BrodenStore

    st = BrodenStore(tmp_path / "S")
    scene = next(lab for lab in st.labels if "scene" in lab.categories)
    want = sorted(i for i in range(len(st)) if scene.number in st.image_labels(i, "scene"))  # plain scan
    text, _ = _cli(tmp_path, "find", "S", scene.name, package="broden_builder")
    assert want and all(st.rows[i].image in text for i in want)
    text, _ = _cli(tmp_path, "build", "r.yaml", "--plan", package="broden_builder")
    assert text.startswith("plan (metadata only")
    # broden add: two images with an image-level label of a new category
    img = tmp_path / "mine" / "images"
    img.mkdir(parents=True)
    for k in range(2):
        Image.new("RGB", (40, 30), (200, 10 * k, 0)).save(img / f"p{k}.png")
    (tmp_path / "mine" / "labels.csv").write_text("image,label\np0.png,running\np1.png,jumping\n")
    (tmp_path / "entry.yaml").write_text(yaml.safe_dump({"type": "folder", "images": str(img), "labels":
                                                         str(tmp_path / "mine" / "labels.csv"), "category": "action"}))
    text, err = _cli(tmp_path, "add", "S", "--source", "entry.yaml", package="broden_builder")
    assert "2 images added" in text
    st = BrodenStore(tmp_path / "S")
    assert len(st) == 14 and {"running", "jumping"} <= set(st.label_by_name)
