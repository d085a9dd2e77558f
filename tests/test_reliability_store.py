"""Issue 15 on the builder side: locks with real processes, whole-store commits, crash debris,
confined paths, no destroyed stores, one decoder, extraction bounds.

Oracles: the clean build's bytes (a resumed or protected store must equal them), files
placed outside the store (never reachable), the values written into a PNG by hand, the
sizes of archives made here.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from broden_builder import BrodenStore
from broden_builder import build as build_mod
from broden_builder.build import BuildError
from broden_builder.cli import main as broden
from broden_builder.store.errors import StoreFormatError
from broden_builder.store.validate import validate_store
from conftest import REPO, build_synthetic

PY = sys.executable


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _errors(store) -> list:
    return [p for p in validate_store(store) if p.severity == "error"]


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def _env():
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", PYTHONPATH=str(REPO) + os.pathsep + str(REPO / "tests"))
    return env


def _recipe(path: Path, count: int = 20, size: int = 64, **extra) -> Path:
    data = {"name": extra.pop("name", "t"), "size": size, "segmentation_size": size // 2, "min_frequency": 1,
            "min_coverage": 0.0, "sources": [{"type": "synthetic", "count": count, "seed": 0}], **extra}
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


# ----------------------------------------------------------------------------- 1. locks
HOLD_DURING_BUILD = textwrap.dedent("""
    import sys, time
    from broden_builder import build
    real = build.unify
    def slow(*a, **k):
        print("HOLDING", flush=True)
        time.sleep(float(sys.argv[3]))
        return real(*a, **k)
    build.unify = slow
    from broden_builder.cli import main
    sys.exit(main(["build", sys.argv[1], "--out", sys.argv[2], "-q"]))
""")


def _start_holder(tmp_path: Path, recipe: Path, out: Path, seconds: float = 60) -> subprocess.Popen:
    script = tmp_path / "hold.py"
    script.write_text(HOLD_DURING_BUILD)
    p = subprocess.Popen([PY, str(script), str(recipe), str(out), str(seconds)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    line = p.stdout.readline()
    assert "HOLDING" in line, p.stderr.read()
    return p


def test_second_build_into_same_out_is_refused_with_holder_pid_and_host(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r.yaml", count=12)
    out = tmp_path / "out"
    holder = _start_holder(tmp_path, recipe, out)
    try:
        assert broden(["build", str(recipe), "--out", str(out), "-q"]) == 1
        err = capsys.readouterr().err
        assert f"process {holder.pid} on host {socket.gethostname()}" in err and str(out) in err
        assert "Traceback" not in err
        # broden add and broden recover on the store being built are refused too
        entry = tmp_path / "e.yaml"
        entry.write_text(json.dumps({"type": "synthetic", "count": 2, "prefix": "more"}))
        assert broden(["add", str(out), "--source", str(entry), "-q"]) == 1
        assert f"process {holder.pid}" in capsys.readouterr().err
        assert broden(["recover", str(out)]) == 1
    finally:
        holder.kill()  # kill -9: the OS releases the lock
        holder.wait()
    assert not (out / "index.csv").exists()
    # the killed holder's lock is gone: the next build resumes and completes
    assert broden(["build", str(recipe), "--out", str(out), "-q"]) == 0
    assert _errors(out) == [] and len(BrodenStore(out)) == 12


def test_two_concurrent_adds_one_refused_rows_never_lost(tmp_path):
    store = tmp_path / "s"
    build_synthetic(store, count=10, size=32, seg=16)
    script = tmp_path / "add.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from broden_builder import extend
        real = extend._unify_with_store
        def slow(*a, **k):
            # Hold the store's lock until the test says the second add has finished (no fixed sleep:
            # on a loaded machine the second process may take longer than any sleep to start).
            print("HOLDING", flush=True)
            release, deadline = sys.argv[3], time.monotonic() + 300
            while not __import__("os").path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)
            return real(*a, **k)
        extend._unify_with_store = slow
        from broden_builder.cli import main
        sys.exit(main(["add", sys.argv[1], "--source", sys.argv[2], "-q"]))
    """))
    e1, e2 = tmp_path / "e1.yaml", tmp_path / "e2.yaml"
    e1.write_text(json.dumps({"type": "synthetic", "count": 3, "seed": 1, "prefix": "one"}))
    e2.write_text(json.dumps({"type": "synthetic", "count": 4, "seed": 2, "prefix": "two"}))
    release = tmp_path / "release"
    p1 = subprocess.Popen([PY, str(script), str(store), str(e1), str(release)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert "HOLDING" in p1.stdout.readline()
        p2 = subprocess.run([PY, "-m", "broden_builder.cli", "add", str(store), "--source", str(e2), "-q"],
                            capture_output=True, text=True, env=_env())
    finally:
        release.write_text("go")
    p1.wait(timeout=300)
    assert p1.returncode == 0, p1.stderr
    assert p2.returncode == 1 and f"process {p1.pid}" in p2.stderr and "Traceback" not in p2.stderr
    assert _errors(store) == [] and len(BrodenStore(store)) == 13


def test_missing_staging_file_is_an_error(tmp_path, monkeypatch):
    real = build_mod.unify

    def losing(*a, **k):
        victim = sorted((tmp_path / "out" / ".build" / ".staging" / "native").glob("*.npz"))[3]
        victim.unlink()
        return real(*a, **k)

    monkeypatch.setattr(build_mod, "unify", losing)
    with pytest.raises(BuildError, match="vanished"):
        build_synthetic(tmp_path / "out", count=10)
    assert not (tmp_path / "out" / "index.csv").exists()


# ----------------------------------------------------------------------------- 2./3. commits, debris
KILL_AT_REPLACE = textwrap.dedent("""
    import os, sys
    kill_at = int(os.environ["KILL_AT"]); target = os.environ["KILL_MODULE"]
    import importlib
    mod = importlib.import_module(target)
    real = os.replace
    n = {"k": 0}
    class Os:  # the module's view of os, with replace() dying at the Nth call (a kill between write and rename)
        def __getattr__(self, name):
            return getattr(os, name)
        @staticmethod
        def replace(a, b):
            n["k"] += 1
            if n["k"] == kill_at:
                os._exit(9)
            return real(a, b)
    mod.os = Os()
    from broden_builder.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _run_killed(tmp_path: Path, module: str, kill_at: int, argv: list) -> subprocess.CompletedProcess:
    script = tmp_path / "killer.py"
    script.write_text(KILL_AT_REPLACE)
    env = dict(_env(), KILL_AT=str(kill_at), KILL_MODULE=module)
    return subprocess.run([PY, str(script)] + argv, capture_output=True, text=True, env=env, timeout=300)


def test_kill_between_write_and_rename_leaves_debris_that_resume_sweeps(tmp_path):
    recipe = _recipe(tmp_path / "r.yaml", count=16)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert broden(["build", str(recipe), "--out", str(clean), "-q"]) == 0
    r = _run_killed(tmp_path, "broden_builder.store.atomic", 25, ["build", str(recipe), "--out", str(killed), "-q"])
    assert r.returncode == 9, r.stderr
    debris = [p for p in killed.rglob("*.tmp")]
    assert debris, "the kill must leave a temporary file behind"
    assert broden(["build", str(recipe), "--out", str(killed), "-q"]) == 0
    assert not list(killed.rglob("*.tmp"))
    assert _tree(killed) == _tree(clean)


def test_truncated_staging_npz_is_redone(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    build_synthetic(clean, count=12)
    real = build_mod.unify

    def stop(*a, **k):
        raise KeyboardInterrupt("simulated kill after pass 1")

    monkeypatch.setattr(build_mod, "unify", stop)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build_synthetic(out, count=12)
    monkeypatch.setattr(build_mod, "unify", real)
    staged = sorted((out / ".build" / ".staging" / "native").glob("*.npz"))
    staged[0].write_bytes(staged[0].read_bytes()[:50])       # a power cut truncated it
    staged[1].write_bytes(b"")
    rows = sorted((out / ".build" / ".staging" / "rows").glob("*.json"))
    build_synthetic(out, count=12)
    assert _tree(out) == _tree(clean)


def test_add_killed_inside_its_commit_is_refused_then_completed(tmp_path, capsys):
    store = tmp_path / "s"
    build_synthetic(store, count=10, size=32, seg=16)
    entry = tmp_path / "e.yaml"
    entry.write_text(json.dumps({"type": "synthetic", "count": 4, "seed": 3, "prefix": "more"}))
    # kill at the 3rd rename of the commit (store/commit.py): some images moved, tables not
    r = _run_killed(tmp_path, "broden_builder.store.commit", 3, ["add", str(store), "--source", str(entry), "-q"])
    assert r.returncode == 9, r.stderr
    # every reader refuses the store between two versions
    with pytest.raises(StoreFormatError, match="interrupted commit"):
        BrodenStore(store)
    probs = validate_store(store)
    assert len(probs) == 1 and "broden recover" in probs[0].message
    assert broden(["find", str(store), "1"]) == 1
    assert "interrupted commit" in capsys.readouterr().err
    # rerunning the same addition completes it and says so (exit 0, not "unchanged")
    assert broden(["add", str(store), "--source", str(entry), "-q"]) == 0
    assert "completed the interrupted addition" in capsys.readouterr().out
    assert _errors(store) == [] and len(BrodenStore(store)) == 14
    assert not (store / ".broden-add").exists() and not list(store.glob(".trash-*"))


def test_broden_recover_completes_a_killed_build_commit(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r.yaml", count=10)
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert broden(["build", str(recipe), "--out", str(clean), "-q"]) == 0
    r = _run_killed(tmp_path, "broden_builder.store.commit", 2, ["build", str(recipe), "--out", str(out), "-q"])
    assert r.returncode == 9, r.stderr
    with pytest.raises(StoreFormatError, match="interrupted commit"):
        BrodenStore(out)
    assert broden(["recover", str(out)]) == 0
    assert "completed" in capsys.readouterr().out
    assert _tree(out) == _tree(clean)


# ----------------------------------------------------------------------------- 4. confined paths
@pytest.fixture
def store_copy(synthetic_store, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(synthetic_store, dst)
    return dst


def _edit_index(store: Path, row: int, column: int, value: str) -> None:
    lines = (store / "index.csv").read_bytes().decode().split("\r\n")
    cells = lines[row].split(",")
    cells[column] = value
    lines[row] = ",".join(cells)
    (store / "index.csv").write_bytes("\r\n".join(lines).encode())


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "png-dotdot"])
def test_paths_leaving_the_store_are_refused_everywhere(store_copy, tmp_path, capsys, how):
    secret = tmp_path / "outside.jpg"
    Image.new("RGB", (64, 64)).save(secret)
    s = BrodenStore(store_copy)
    if how == "dotdot":
        _edit_index(store_copy, 2, 0, "../../outside.jpg")
    elif how == "absolute":
        _edit_index(store_copy, 2, 0, str(secret))
    elif how == "symlink":
        target = store_copy / "images" / s.rows[1].image
        target.unlink()
        target.symlink_to(secret)
    else:
        header = (store_copy / "index.csv").read_bytes().decode().split("\r\n")[0].split(",")
        col = header.index("object")
        _edit_index(store_copy, 2, col, "../../../outside.png")
    errs = _errors(store_copy)
    assert any("leaves" in e.message and e.file == "index.csv" and e.row == 2 for e in errs), errs
    # the reader (so dissect, the dataset, find) refuses before opening the file
    if how == "symlink":
        with pytest.raises(StoreFormatError, match="symbolic link"):
            BrodenStore(store_copy).load_image(1)
    else:
        with pytest.raises(StoreFormatError, match="leaves"):
            BrodenStore(store_copy)
        assert broden(["find", str(store_copy), "1", "-q"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "index.csv, row 2" in err and "Traceback" not in err


def test_dataset_refuses_symlinked_image(store_copy, tmp_path):
    from broden_builder.torch_dataset import BrodenDataset

    secret = tmp_path / "outside.jpg"
    Image.new("RGB", (64, 64)).save(secret)
    s = BrodenStore(store_copy)
    target = store_copy / "images" / s.rows[0].image
    target.unlink()
    target.symlink_to(secret)
    ds = BrodenDataset(store_copy)
    with pytest.raises(StoreFormatError, match="symbolic link"):
        ds[0]


# ----------------------------------------------------------------------------- 5. names
@pytest.mark.parametrize("prefix", ["../../x", "/abs", "a/b", "..", ".hidden"])
def test_unsafe_prefix_is_refused(tmp_path, capsys, prefix):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"size": 32, "sources": [{"type": "synthetic", "count": 2, "prefix": prefix}]}))
    assert broden(["build", str(recipe), "--out", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "prefix" in err and str(recipe) in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


# ----------------------------------------------------------------------------- 6. no destroyed store
def test_build_never_destroys_an_existing_store(tmp_path, capsys, monkeypatch):
    a = _recipe(tmp_path / "a.yaml", count=10, name="a")
    b = _recipe(tmp_path / "b.yaml", count=8, size=48, name="b")
    out = tmp_path / "out"
    assert broden(["build", str(a), "--out", str(out), "-q"]) == 0
    before = _tree(out)
    assert broden(["build", str(b), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "another recipe" in err and "--overwrite" in err
    assert _tree(out) == before
    # --overwrite, but the new build fails half-way: the old store is untouched and valid
    real = build_mod.unify
    monkeypatch.setattr(build_mod, "unify", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    assert broden(["build", str(b), "--out", str(out), "-q", "--overwrite"]) == 1
    assert {k: v for k, v in _tree(out).items() if not k.startswith(".build/")} == before
    assert _errors(out) == [] and len(BrodenStore(out)) == 10
    monkeypatch.setattr(build_mod, "unify", real)
    assert broden(["build", str(b), "--out", str(out), "-q", "--overwrite"]) == 0
    s = BrodenStore(out)
    assert len(s) == 8 and s.rows[0].ih == 48 and _errors(out) == []
    assert not (out / ".build").exists()


def test_foreign_folder_is_not_replaced(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.jpg").write_bytes(b"precious")
    assert broden(["build", str(_recipe(tmp_path / "r.yaml", count=4)), "--out", str(out), "-q"]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert (out / "images" / "holiday.jpg").read_bytes() == b"precious"


# ----------------------------------------------------------------------------- 9. one decoder
def test_16bit_label_png_decodes_the_same_in_reader_and_validator(store_copy):
    s = BrodenStore(store_copy)
    row = next(r for r in s.rows if r.cells["object"])
    rel = row.cells["object"][0]
    values = s.load_label_png(rel, row.index)
    Image.fromarray(values.astype(np.uint16)).save(store_copy / "images" / rel)   # same labels, 16-bit greyscale
    assert Image.open(store_copy / "images" / rel).mode.startswith("I;16")
    assert np.array_equal(BrodenStore(store_copy).load_label_png(rel, row.index), values)
    assert _errors(store_copy) == []


def test_row_wider_than_header_and_orphans_are_errors(store_copy):
    text = (store_copy / "index.csv").read_bytes().decode().split("\r\n")
    text[3] += ",extra"
    (store_copy / "index.csv").write_bytes("\r\n".join(text).encode())
    (store_copy / "images" / "synthetic" / "stray.jpg").write_bytes(b"x")
    errs = _errors(store_copy)
    assert any(e.file == "index.csv" and e.row == 3 and "cells" in e.message for e in errs)
    assert any(e.file == "images/synthetic/stray.jpg" and "orphan" in e.message for e in errs)


def test_huge_png_header_is_refused_before_decoding(store_copy, capsys):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    s = BrodenStore(store_copy)
    row = next(r for r in s.rows if r.cells["object"])
    (store_copy / "images" / row.cells["object"][0]).write_bytes(png)
    errs = _errors(store_copy)
    assert any("900000000 pixels" in e.message and row.cells["object"][0] in e.message for e in errs), errs
    with pytest.raises(StoreFormatError, match="900000000 pixels"):
        s.pixel_layers(row.index, "object")
    assert broden(["validate", str(store_copy), "-q"]) == 1
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- 10. extraction bounds
def _zip_bomb(path: Path, mib: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.bin", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(mib):
                f.write(block)
    return path


def test_unverified_archive_bounds(tmp_path):
    from broden_builder.download import ExtractLimitError, ExtractLimits, extract_archive

    bomb = _zip_bomb(tmp_path / "bomb.zip", 64)
    assert bomb.stat().st_size < 1 << 20                       # well under 1 MiB expands to 64 MiB
    with pytest.raises(ExtractLimitError, match="fold"):
        extract_archive(bomb, tmp_path / "t", limits=ExtractLimits(), progress=False)
    assert not list((tmp_path / "t").rglob("zeros.bin"))
    with pytest.raises(ExtractLimitError, match="GiB"):
        extract_archive(bomb, tmp_path / "t", limits=ExtractLimits(max_bytes=32 << 20, max_ratio=1e9), progress=False)
    tgz = tmp_path / "many.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        for i in range(30):
            info = tarfile.TarInfo(f"f{i}.txt")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ExtractLimitError, match="members"):
        extract_archive(tgz, tmp_path / "m", limits=ExtractLimits(max_members=10), progress=False)
    # raised limits (the command-line flags) let a trusted archive through; verified archives are unbounded
    extract_archive(tgz, tmp_path / "m", limits=ExtractLimits(max_members=100), progress=False)
    assert len(list((tmp_path / "m").glob("f*.txt"))) == 30


def test_unverified_limits_flags_reach_the_options():
    from broden_builder.cli import build_parser
    from broden_builder.cli import download_options

    args = build_parser().parse_args(["build", "r.yaml", "--out", "o", "--max-extract-ratio", "5000",
                                      "--max-extract-gib", "1", "--max-extract-members", "7"])
    lim = download_options(args).extract_limits
    assert (lim.max_ratio, lim.max_bytes, lim.max_members) == (5000, 1 << 30, 7)


def test_confinement_cache_agrees_with_confined(tmp_path):
    """paths.Confinement (folders resolved once, files lstat-ed) decides as confined() does:
    a symlinked file or a symlinked folder leading outside is refused, also after a cached lookup."""
    from broden_builder.store.paths import Confinement, UnsafePathError, confined

    base, outside = tmp_path / "images", tmp_path / "secret"
    (base / "a").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    (base / "a" / "ok.png").write_bytes(b"x")
    (base / "a" / "link.png").symlink_to(outside / "x.png")
    (base / "a" / "inner.png").symlink_to(base / "a" / "ok.png")
    (base / "out").symlink_to(outside)
    c = Confinement(base)
    for rel in ("a/ok.png", "a/inner.png", "a/missing.png", "a/ok.png", "out/x.png", "a/link.png", "out/x.png",
                "../secret/x.png", "/etc/passwd"):
        try:
            want = confined(base, rel)
        except UnsafePathError as e:
            with pytest.raises(UnsafePathError, match="leaves"):
                c(rel)
            assert ("symbolic link" in str(e)) == ("symbolic link" in str(pytest.raises(UnsafePathError, c, rel).value))
        else:
            assert c(rel) == want


def test_a_resumed_build_says_so(tmp_path, monkeypatch, capsys):
    """A build that finds a partial build of the same recipe says it resumes, at the default level
    (one line naming the folder and the 12 images pass 1 had staged); a fresh build says nothing."""
    real = build_mod.unify

    def stop(*a, **k):
        raise KeyboardInterrupt("simulated kill after pass 1")

    monkeypatch.setattr(build_mod, "unify", stop)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build_synthetic(out, count=12)
    assert "resuming" not in capsys.readouterr().err
    monkeypatch.setattr(build_mod, "unify", real)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    build_synthetic(out, count=12, quiet=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "resuming" in line]
    assert lines == [f"resuming the partial build in {out / '.build'} (12 images staged)"]
