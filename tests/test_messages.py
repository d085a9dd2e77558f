"""Each bad input of issue 25 (kind 6) gets one clear ``error:`` line naming the culprit: no
traceback, and "this is a bug" only for bugs. Oracle: the input broken here and the file,
key or value the message must name.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from broden_builder.cli import main as broden
from broden_builder.store.reader import BrodenStore
from conftest import REPO, build_synthetic
from dissect.cli import main as dissect

TESTS = Path(__file__).resolve().parent


def _one(capsys, rc: int, want_rc: int, *fragments: str) -> str:
    out = capsys.readouterr()
    err = out.err
    assert rc == want_rc, err
    assert "Traceback" not in err + out.out and "this is a bug" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], (f, err)
    return lines[0]


@pytest.fixture(scope="module")
def acts(synthetic_store, tmp_path_factory) -> Path:
    n = len(BrodenStore(synthetic_store).rows)
    path = tmp_path_factory.mktemp("acts") / "feats.npy"
    np.save(path, np.random.default_rng(0).standard_normal((n, 3, 4, 4)).astype(np.float32))
    return path


def _score(store, acts, out, *extra):
    return dissect(["score", "--store", str(store), "--activations", str(acts), "--out", str(out), "--quiet",
                    "--no-report", "--workers", "0", *extra])


@pytest.mark.parametrize("kind", ["text", "npz", "huge"])
def test_bad_basis_files(synthetic_store, acts, tmp_path, capsys, kind):
    basis = tmp_path / f"b.{'npz' if kind == 'npz' else 'npy'}"
    if kind == "text":
        basis.write_text("1 0 0\n0 1 0\n0 0 1\n")
    elif kind == "npz":
        np.savez(basis, m=np.eye(3))
    else:
        np.save(basis, np.eye(3) * 1e300)
    rc = _score(synthetic_store, acts, tmp_path / "o", "--basis", str(basis))
    line = _one(capsys, rc, 1, str(basis))
    assert "allow_pickle" not in line and "activations" not in line.split(str(basis))[0]
    assert {"text": "not a .npy file", "npz": ".npz archive", "huge": "beyond float32"}[kind] in line


def test_a_basis_that_overflows_is_blamed_not_the_activations(synthetic_store, acts, tmp_path, capsys):
    basis = tmp_path / "b.npy"
    np.save(basis, np.eye(3) * 3e38)  # within float32, but 3e38 * activations above 1.2 overflow
    rc = _score(synthetic_store, acts, tmp_path / "o", "--basis", str(basis))
    _one(capsys, rc, 1, "basis", "inf or NaN", "scale it down")


def test_a_model_function_that_raises(tmp_path, capsys):
    (tmp_path / "m.py").write_text("def f():\n    raise RuntimeError('boom')\n")
    _one(capsys, dissect(["layers", "--model", f"{tmp_path / 'm.py'}:f"]), 1, "m.py:f", "f() raised RuntimeError: boom")


def test_a_recipe_nested_5000_deep(tmp_path, capsys):
    r = tmp_path / "deep.yaml"
    r.write_text("sources:\n- " + "[" * 5000 + "]" * 5000 + "\n")
    _one(capsys, broden(["build", str(r), "--out", str(tmp_path / "s")]), 1, str(r), "nested too deeply")


def test_a_recipe_without_sources(tmp_path, capsys):
    r = tmp_path / "r.yaml"
    r.write_text("size: 32\nsources: []\n")
    line = _one(capsys, broden(["build", str(r), "--out", str(tmp_path / "s")]), 1, "lists no sources")
    assert "missing" not in line


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(summary=[1]), "'summary'"),
    (lambda d: d["summary"].update(per_category={"object": "3"}), "'summary.per_category'"),
    (lambda d: d["settings"].update(iou_threshold="x"), "'settings.iou_threshold'"),
    (lambda d: d.update(layer=5), "'layer'"),
    (lambda d: d.update(model="m"), "'model'"),
    (lambda d: d["summary"].update(units="64"), "'summary.units'"),
])
def test_compare_on_wrongly_typed_result_json(synthetic_store, acts, tmp_path, capsys, change, field):
    assert _score(synthetic_store, acts, tmp_path / "o") == 0
    path = tmp_path / "o" / "feats" / "result.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    _one(capsys, dissect(["compare", str(tmp_path / "o"), "--out", str(tmp_path / "c")]), 1, str(path), field)


def test_find_refuses_a_split_the_store_lacks(synthetic_store, capsys):
    _one(capsys, broden(["find", str(synthetic_store), "car", "--split", "test"]), 1, "'test'", "train, val")


def test_a_full_disk_names_the_path(synthetic_store, acts, tmp_path, capsys, monkeypatch):
    """The write meets the kernel's real ENOSPC (/dev/full), which carries no file name."""
    from broden_builder.store import atomic

    real_fdopen = os.fdopen

    def full(fd, mode="r", *a, **k):
        if "w" in mode:
            os.close(fd)
            return open("/dev/full", "wb", buffering=0)
        return real_fdopen(fd, mode, *a, **k)

    monkeypatch.setattr(atomic.os, "fdopen", full)
    line = _one(capsys, _score(synthetic_store, acts, tmp_path / "o"), 1, str(tmp_path / "o"), "No space left")
    assert errno.ENOSPC and "/dev/full" not in line


def test_sigterm_leaves_no_lock_holder(synthetic_store, acts, tmp_path):
    out = tmp_path / "o"
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), PAUSE_READY=str(ready),
               PAUSE_GO=str(go))
    p = subprocess.Popen([sys.executable, str(TESTS / "lock_pause.py"), "score", "--store", str(synthetic_store),
                          "--activations", str(acts), "--out", str(out), "--quiet", "--no-report"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ready.exists():
        assert p.poll() is None and time.time() - t0 < 240, p.communicate()
        time.sleep(0.05)
    assert (out / ".lock.holder").exists()  # held now
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "terminated" in err and "Traceback" not in err, err
    assert not (out / ".lock.holder").exists()


def test_a_store_rebuilt_between_the_passes(synthetic_store, acts, tmp_path, capsys, monkeypatch):
    from dissect.engine import _passes

    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    other = tmp_path / "other"
    build_synthetic(other, count=len(BrodenStore(synthetic_store).rows), seed=11)
    real = _passes.Run.end_pass1

    def then_rebuild(self, *a, **k):
        out = real(self, *a, **k)
        shutil.rmtree(store)
        shutil.copytree(other, store)
        return out

    monkeypatch.setattr(_passes.Run, "end_pass1", then_rebuild)
    _one(capsys, _score(store, acts, tmp_path / "o"), 1, str(store), "the store changed")
