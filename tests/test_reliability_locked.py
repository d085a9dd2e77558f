"""explain, compare and ablate take the ``--out`` lock and commit whole results (issue 25, kind 3).

Two REAL processes per command: the first (tests/lock_pause.py) is held inside its lock while the
second runs the same command into the same folder. Oracle: the second is refused at once, in one
line naming the folder and the first's PID, and writes nothing; the first's result is whole; run
again afterwards, the second's result joins it (ablate: both entries listed in ablations.json).
A free race of two ablations checks the same promise without the pause.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from broden_builder.store.reader import BrodenStore
from conftest import REPO
from dissect.cli import main
from test_ablate import COLORNET_SOURCE, _folder

TESTS = Path(__file__).resolve().parent


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), BRODEN_TRACEBACK="")


def _start_paused(args, tmp_path: Path, tag: str):
    ready, go = tmp_path / f"{tag}.ready", tmp_path / f"{tag}.go"
    env = dict(_env(), PAUSE_READY=str(ready), PAUSE_GO=str(go))
    p = subprocess.Popen([sys.executable, str(TESTS / "lock_pause.py"), *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ready.exists():
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < 240, "the first process never took the lock"
        time.sleep(0.05)
    return p, go


def _run(args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dissect.cli", *args], env=_env(), capture_output=True, text=True,
                          timeout=600)


def _refused(p: subprocess.CompletedProcess, out: Path, holder_pid: int) -> None:
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "this is a bug" not in p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and str(out) in errors[0] and f"in use by process {holder_pid}" in errors[0], p.stderr


def _finish(p, go: Path) -> None:
    go.write_text("go")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, (out, err)


@pytest.fixture(scope="module")
def acts_file(synthetic_store, tmp_path_factory) -> Path:
    n = len(BrodenStore(synthetic_store).rows)
    path = tmp_path_factory.mktemp("acts") / "feats.npy"
    np.save(path, np.random.default_rng(0).standard_normal((n, 3, 4, 4)).astype(np.float32))
    return path


def test_two_explains_into_one_folder(synthetic_store, acts_file, tmp_path):
    out = tmp_path / "out"
    base = ["explain", "--store", str(synthetic_store), "--activations", str(acts_file), "--out", str(out),
            "--quiet", "--no-report", "--workers", "0"]
    first, go = _start_paused(base + ["--length", "1"], tmp_path, "a")
    second = _run(base + ["--length", "2"])
    _refused(second, out, first.pid)
    assert not (out / "feats" / "explanations.csv").exists()  # the refused one wrote nothing
    _finish(first, go)
    doc = json.loads((out / "feats" / "explanations.json").read_text())
    assert doc["settings"]["length"] == 1
    assert _run(base + ["--length", "2"]).returncode == 0  # once free, the second runs
    assert json.loads((out / "feats" / "explanations.json").read_text())["settings"]["length"] == 2
    assert not (out / ".lock.holder").exists()


def test_two_compares_into_one_folder(synthetic_store, acts_file, tmp_path):
    res = tmp_path / "res"
    assert main(["score", "--store", str(synthetic_store), "--activations", str(acts_file), "--out", str(res),
                 "--quiet", "--no-report", "--workers", "0"]) == 0
    dest = tmp_path / "cmp"
    first, go = _start_paused(["compare", str(res), "--out", str(dest), "--title", "first"], tmp_path, "a")
    second = _run(["compare", str(res), "--out", str(dest), "--title", "second"])
    _refused(second, dest, first.pid)
    _finish(first, go)
    assert "first" in (dest / "compare.html").read_text()


def _ablate_args(tmp_path: Path, units: str):
    folder = tmp_path / "data"
    if not folder.exists():
        _folder(folder)
        (tmp_path / "colornet.py").write_text(COLORNET_SOURCE)
    return ["ablate", "--model", f"{tmp_path / 'colornet.py'}:colornet", "--layer", "features", "--data", str(folder),
            "--out", str(tmp_path / "out"), "--input-size", "8", "--mean", "0,0,0", "--std", "1,1,1", "--quiet",
            "--units", units]


def _listed(tmp_path: Path) -> list:
    index = json.loads((tmp_path / "out" / "features" / "ablations.json").read_text())
    for e in index:  # every listed csv exists and is whole (header + 3 classes + the total)
        rows = list(csv.reader(open(tmp_path / "out" / "features" / e["file"], newline="")))
        assert len(rows) == 5, e
    return sorted(tuple(e["units"]) for e in index)


def test_two_ablations_of_one_layer(tmp_path):
    first, go = _start_paused(_ablate_args(tmp_path, "1"), tmp_path, "a")
    second = _run(_ablate_args(tmp_path, "2"))
    _refused(second, tmp_path / "out", first.pid)
    _finish(first, go)
    assert _listed(tmp_path) == [(1,)]
    assert _run(_ablate_args(tmp_path, "2")).returncode == 0
    assert _listed(tmp_path) == [(1,), (2,)]  # both entries survive


def test_racing_ablations_both_survive_or_one_is_refused(tmp_path):
    _ablate_args(tmp_path, "1")
    procs = {u: subprocess.Popen([sys.executable, "-m", "dissect.cli", *_ablate_args(tmp_path, u)], env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for u in ("1", "3")}
    done = {u: (p.wait(timeout=600), p.stderr.read()) for u, p in procs.items()}
    ok = {(int(u),) for u, (rc, _) in done.items() if rc == 0}
    for u, (rc, err) in done.items():
        assert rc == 0 or (rc == 1 and "in use by process" in err and "Traceback" not in err), (u, err)
    assert ok and set(_listed(tmp_path)) == ok


def test_a_corrupt_ablations_json_is_never_dropped(tmp_path, capsys):
    args = _ablate_args(tmp_path, "1")
    index = tmp_path / "out" / "features" / "ablations.json"
    index.parent.mkdir(parents=True)
    index.write_text("[{\"file\": \"kept.csv\"")  # truncated
    assert main(args) == 1
    err = capsys.readouterr().err
    assert str(index) in err and "Traceback" not in err
    assert index.read_text() == "[{\"file\": \"kept.csv\""


def test_explanations_pair_is_checked(synthetic_store, acts_file, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["explain", "--store", str(synthetic_store), "--activations", str(acts_file), "--out", str(out),
            "--quiet", "--no-report", "--workers", "0", "--length", "1"]
    assert main(base) == 0
    d = out / "feats"
    text = (d / "explanations.csv").read_text()
    (d / "explanations.csv").write_text(text.replace("\n1,", "\n1,x", 1))  # a csv from elsewhere
    from dissect.explain.output import read_explanations

    with pytest.raises(ValueError, match="explanations.json records"):
        read_explanations(d)
