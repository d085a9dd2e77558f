"""A corpus of bad inputs for the ``broden`` and ``dissect`` commands (issue 15, items 7 and 8).

Every case asserts the exit status, a one-line ``error: ...`` naming the culprit (file,
key or value) and that no traceback reaches the user. Oracle: the inputs made here
(the file we broke, the key we misspelt).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broden_builder.cli import main as broden
from conftest import REPO


def _check(capsys, rc: int, want_rc: int, *fragments: str, bug: bool = False) -> str:
    out = capsys.readouterr()
    err = out.err
    assert rc == want_rc, err
    assert "Traceback" not in err and "Traceback" not in out.out
    assert ("this is a bug" in err) == bug, err  # bad input is never reported as our bug (issue 25)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert lines, err
    for f in fragments:
        assert f in err, (f, err)
    return err


@pytest.fixture
def store_copy(synthetic_store, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(synthetic_store, dst)
    return dst


def _recipe_text(tmp_path: Path, text, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


# ----------------------------------------------------------------------------- stores
def test_find_on_missing_store(tmp_path, capsys):
    _check(capsys, broden(["find", str(tmp_path / "nope"), "dog"]), 1, str(tmp_path / "nope"))


def test_find_on_folder_without_store(tmp_path, capsys):
    _check(capsys, broden(["find", str(tmp_path), "dog"]), 1, "not a Broden store")


@pytest.mark.parametrize("cmd", ["find", "stats", "validate"])
def test_index_csv_that_is_a_folder(store_copy, capsys, cmd):
    (store_copy / "index.csv").unlink()
    (store_copy / "index.csv").mkdir()
    argv = [cmd, str(store_copy)] + (["dog"] if cmd == "find" else [])
    rc = broden(argv)
    out = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out.err and "index.csv" in out.err + out.out
    assert "is not a file" in out.err + out.out


def test_find_unknown_concept(store_copy, capsys):
    _check(capsys, broden(["find", str(store_copy), "unicorn"]), 1, "unicorn", "label.csv")


def test_stats_on_malformed_label_csv(store_copy, capsys):
    (store_copy / "label.csv").write_bytes(b"number,name\r\nabc,dog\r\n")
    _check(capsys, broden(["stats", str(store_copy)]), 1, "label.csv")


def test_label_csv_not_utf8(store_copy, capsys):
    (store_copy / "label.csv").write_bytes(b"\xff\xfe\x00garbage")
    _check(capsys, broden(["find", str(store_copy), "dog"]), 1, "label.csv", "UTF-8")


# ----------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("text,fragment", [
    ("- a\n- b\n", "must be a mapping"),                       # a YAML list
    ("42\n", "must be a mapping"),                             # a scalar
    (b"name: caf\xe9\n", "not UTF-8"),                         # Latin-1 bytes
    ("size: [1, 2\n", "invalid YAML"),
    ("sources:\n  - {type: synthetic, count: abc}\n", "sources[0].count"),
    ("sources:\n  - {type: synthetic, cuont: 10}\n", "did you mean 'count'"),
    ("color: \"false\"\n", "color"),
    ("jpeg_quality: 1000\n", "jpeg_quality"),
    ("size: 32.7\n", "size"),
    ("sources:\n  - {type: synthetic, count: -5}\n", "sources[0].count"),
    ("splits: {test: 1.0}\n", "splits"),
    ("sources:\n  - {type: nosuchsource}\n", "nosuchsource"),
    ("sources: {type: synthetic}\n", "sources"),
])
def test_bad_recipe(tmp_path, capsys, text, fragment):
    r = _recipe_text(tmp_path, text)
    err = _check(capsys, broden(["build", str(r), "--out", str(tmp_path / "o"), "-q"]), 1, fragment)
    assert str(r) in err or "nosuchsource" in fragment
    assert not (tmp_path / "o" / "index.csv").exists()


def test_recipe_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "r.yaml").mkdir()
    _check(capsys, broden(["build", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o")]), 1, "is a folder")


def test_recipe_missing(tmp_path, capsys):
    _check(capsys, broden(["build", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]), 1, "not found")


def test_plan_of_bad_recipe(tmp_path, capsys):
    r = _recipe_text(tmp_path, "sizee: 3\n")
    _check(capsys, broden(["build", str(r), "--plan"]), 1, "did you mean 'size'")


def test_missing_out_is_usage(tmp_path, capsys):
    r = _recipe_text(tmp_path, "size: 32\nsources: [{type: synthetic, count: 2}]\n")
    _check(capsys, broden(["build", str(r)]), 2, "--out")


def test_argparse_usage_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        broden(["build"])
    assert e.value.code == 2


# ----------------------------------------------------------------------------- environment
def test_out_below_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    r = _recipe_text(tmp_path, "size: 32\nsources: [{type: synthetic, count: 2}]\n")
    _check(capsys, broden(["build", str(r), "--out", str(tmp_path / "f" / "store"), "-q"]), 1, str(tmp_path / "f"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_out(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = _recipe_text(tmp_path, "size: 32\nsources: [{type: synthetic, count: 2}]\n")
        _check(capsys, broden(["build", str(r), "--out", str(ro / "s"), "-q"]), 1, "ermission")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EACCES"])
def test_full_disk_or_read_only(tmp_path, capsys, monkeypatch, code):
    """A full disk, a read-only file system, a folder we may not write (simulated: root ignores permissions)."""
    import errno

    from broden_builder.store import atomic

    num = getattr(errno, code)

    def failing(path, data, durable=False):
        raise OSError(num, os.strerror(num), str(path))

    monkeypatch.setattr(atomic, "atomic_write_bytes", failing)
    monkeypatch.setattr("broden_builder.build.atomic_write_bytes", failing)
    r = _recipe_text(tmp_path, "size: 32\nsources: [{type: synthetic, count: 2}]\n")
    _check(capsys, broden(["build", str(r), "--out", str(tmp_path / "o"), "-q"]), 1, os.strerror(num), str(tmp_path / "o"))


def test_add_source_file_bad(store_copy, tmp_path, capsys):
    e = _recipe_text(tmp_path, "[{type: synthetic}, {type: synthetic}]\n", "e.yaml")
    _check(capsys, broden(["add", str(store_copy), "--source", str(e)]), 1, "exactly one")
    e = _recipe_text(tmp_path, "{type: synthetic, count: 2, prefix: ../x}\n", "e.yaml")
    _check(capsys, broden(["add", str(store_copy), "--source", str(e)]), 1, "prefix")


def test_unexpected_exception_is_one_line(monkeypatch, store_copy, capsys):
    from broden_builder.store import reader

    def bug(self, *a, **k):
        raise TypeError("simulated bug")

    monkeypatch.setattr(reader.BrodenStore, "label", bug)
    _check(capsys, broden(["find", str(store_copy), "dog"]), 1, "unexpected TypeError", "simulated bug", bug=True)


def test_broken_pipe_is_quiet(synthetic_store):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "broden_builder.cli", "find", str(synthetic_store), "1", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # like `| head -0`
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
