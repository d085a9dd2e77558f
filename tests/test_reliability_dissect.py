"""Issue 15 on the dissect side: one writer per --out (real processes), a layer's results appear
all at once (kills injected between write and rename), confined names, errors not tracebacks.

Oracles: an uninterrupted run's files (a layer folder must equal one run's files entirely,
never a mix), the holder process's PID, the inputs broken here.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, build_synthetic
from dissect.cli import main as dissect

PY = sys.executable
BASE = ["--quiet", "--workers", "0", "--device", "cpu", "--no-report", "--batch-size", "4"]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + str(REPO / "tests"), OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "store"
    build_synthetic(out, count=16, size=32, seg=16)
    return out


@pytest.fixture(scope="module")
def acts(store, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("acts") / "feats.npy"
    np.save(p, np.random.default_rng(0).random((16, 3, 4, 4)).astype(np.float32))
    return p


def _score(store, acts, out, *extra) -> list:
    return ["score", "--store", str(store), "--activations", str(acts), "--out", str(out)] + BASE + list(extra)


def _files(d: Path) -> dict:
    """A result folder's bytes (result.json without its wall-clock timings)."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "result.json":
                doc = json.loads(data)
                doc.pop("timings", None)
                data = json.dumps(doc, sort_keys=True).encode()
            out[p.relative_to(d).as_posix()] = data
    return out


def _check(capsys, rc, want, *fragments) -> str:
    c = capsys.readouterr()
    assert rc == want, c.err
    assert "Traceback" not in c.err and c.err.startswith("error: ") or "\nerror: " in c.err, c.err
    for f in fragments:
        assert f in c.err, (f, c.err)
    return c.err


# ----------------------------------------------------------------------------- locks
HOLD = textwrap.dedent("""
    import os, sys, time
    from dissect.engine import _runner
    real = _runner.run_pass
    def slow(*a, **k):
        # hold the --out lock until the test writes the release file (bounded), not for a fixed time
        print("HOLDING", flush=True)
        deadline = time.monotonic() + 300
        while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return real(*a, **k)
    _runner.run_pass = slow
    from dissect.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_second_dissect_into_same_out_is_refused(store, acts, tmp_path, capsys):
    out = tmp_path / "o"
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    release = tmp_path / "release"
    p = subprocess.Popen([PY, str(script), str(release)] + _score(store, acts, out, "--quantile", "0.01"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert "HOLDING" in p.stdout.readline(), p.stderr.read()
        # different settings into the same --out: refused, naming the holder
        rc = dissect(_score(store, acts, out, "--quantile", "0.02"))
        _check(capsys, rc, 1, f"process {p.pid} on host {socket.gethostname()}", str(out))
    finally:
        release.write_text("go")
        p.wait(timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "feats" / "result.json").read_text())
    assert res["settings"]["quantile"] == 0.01          # the holder's result survived, whole


# ----------------------------------------------------------------------------- whole-layer commits
KILL = textwrap.dedent("""
    import os, sys, importlib
    kill_at = int(os.environ["KILL_AT"])
    mod = importlib.import_module(os.environ["KILL_MODULE"])
    real = os.replace
    n = {"k": 0}
    class Os:
        def __getattr__(self, name):
            return getattr(os, name)
        @staticmethod
        def replace(a, b):
            n["k"] += 1
            if n["k"] == kill_at:
                os._exit(9)
            return real(a, b)
    mod.os = Os()
    from dissect.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("module,kill_at", [("broden_builder.store.atomic", 3),    # inside the layer's temp folder
                                            ("dissect.results", 1),                # old folder moved aside
                                            ("dissect.results", 2)])               # new folder renamed in
def test_layer_results_appear_all_at_once(store, acts, tmp_path, module, kill_at):
    first, second = tmp_path / "first", tmp_path / "second"
    assert dissect(_score(store, acts, first, "--quantile", "0.01")) == 0
    assert dissect(_score(store, acts, second, "--quantile", "0.05")) == 0
    out = tmp_path / "o"
    shutil.copytree(first, out)
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    r = subprocess.run([PY, str(script)] + _score(store, acts, out, "--quantile", "0.05"), capture_output=True,
                       text=True, env=_env(KILL_AT=kill_at, KILL_MODULE=module), timeout=300)
    assert r.returncode == 9, r.stderr
    layer = out / "feats"
    if layer.exists():  # never a mix: either the first run's files or the second's, whole
        assert _files(layer) in (_files(first / "feats"), _files(second / "feats"))
    # the checkpoint is dropped only after the results are in place: the rerun completes the second run
    assert (out / ".dissect_state").exists()
    assert dissect(_score(store, acts, out, "--quantile", "0.05")) == 0
    assert _files(layer) == _files(second / "feats")
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".writing-" in p.name or ".old-" in p.name]


# ----------------------------------------------------------------------------- names and inputs
def test_name_dotdot_is_refused(store, acts, tmp_path, capsys):
    out = tmp_path / "deep" / "o"
    rc = dissect(_score(store, acts, out, "--name", ".."))
    _check(capsys, rc, 1, "--name")
    assert not (tmp_path / "deep" / "result.json").exists() and not (tmp_path / "deep" / "tally.csv").exists()
    rc = dissect(_score(store, acts, out, "--name", "/tmp/x"))
    _check(capsys, rc, 1, "--name")


def test_device_tpu_is_an_error(store, acts, tmp_path, capsys):
    _check(capsys, dissect(_score(store, acts, tmp_path / "o", "--device", "tpu")), 1, "tpu")


def test_units_only_activation_file(store, tmp_path, capsys):
    p = tmp_path / "pooled.npy"
    np.save(p, np.random.default_rng(1).random((16, 3)).astype(np.float32))   # the documented [N, units] form
    rc = dissect(_score(store, p, tmp_path / "o"))
    c = capsys.readouterr()
    assert "Traceback" not in c.err and rc == 0, c.err
    assert (tmp_path / "o" / "pooled" / "result.json").is_file()


def test_fortran_npy_read_once_like_c_order_and_text_npy_refused(store, tmp_path, capsys):
    data = np.random.default_rng(2).random((16, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "c.npy", data)
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    assert dissect(_score(store, tmp_path / "c.npy", tmp_path / "o", "--name", "x")) == 0
    assert dissect(_score(store, tmp_path / "f.npy", tmp_path / "o2", "--name", "x")) == 0
    a, b = _files(tmp_path / "o" / "x"), _files(tmp_path / "o2" / "x")
    assert {k: v for k, v in a.items() if k != "result.json"} == {k: v for k, v in b.items() if k != "result.json"}
    capsys.readouterr()
    t = tmp_path / "text.npy"
    t.write_text("this is not an array\n")
    err = _check(capsys, dissect(_score(store, t, tmp_path / "o3")), 1, "text.npy")
    assert "unsafe" not in err.lower() and "unpickle" not in err.lower()
    assert not (tmp_path / "o3" / "text" / "result.json").exists()


def test_store_with_duplicate_label_numbers_is_refused(store, acts, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(store, bad)
    text = (bad / "label.csv").read_bytes().decode().split("\r\n")
    first = text[1].split(",")
    second = text[2].split(",")
    second[0] = first[0]  # label 2 now claims number 1
    text[2] = ",".join(second)
    (bad / "label.csv").write_bytes("\r\n".join(text).encode())
    _check(capsys, dissect(_score(bad, acts, tmp_path / "o")), 1, "label.csv", "duplicate label number")


def test_store_with_pending_commit_is_refused(store, acts, tmp_path, capsys):
    bad = tmp_path / "pending"
    shutil.copytree(store, bad)
    (bad / ".broden-add").mkdir()
    (bad / ".broden-add" / "COMMIT").write_text(json.dumps({"moves": [], "retire": []}))
    _check(capsys, dissect(_score(bad, acts, tmp_path / "o")), 1, "broden recover")


def test_model_help_says_the_file_runs(capsys):
    with pytest.raises(SystemExit):
        dissect(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "runs that file's code" in out


def test_store_with_unknown_number_in_a_png_is_refused(store, acts, tmp_path, capsys):
    from PIL import Image

    from broden_builder import BrodenStore
    from broden_builder.store.format import encode_label_png

    bad = tmp_path / "bad"
    shutil.copytree(store, bad)
    s = BrodenStore(bad)
    row = next(r for r in s.rows if r.cells["object"])
    plane = s.load_label_png(row.cells["object"][0], row.index)
    plane[0, 0] = 968                                   # no such label in label.csv
    Image.fromarray(encode_label_png(plane)).save(bad / "images" / row.cells["object"][0])
    _check(capsys, dissect(_score(bad, acts, tmp_path / "o")), 1, "968", f"row {row.index + 1}", "label.csv")
