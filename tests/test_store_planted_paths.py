"""A store made elsewhere cannot make build / add / recover act outside it (issue 15, items 4-6).

The store's own bookkeeping is read from the store: a pending commit plan (``.build/COMMIT``,
``.broden-add/COMMIT``), the work folders themselves, and the folders under ``images/`` that
a commit moves files into. A downloaded store can plant any of them. The oracle here is the
file system outside the store: a folder "outside" whose files and listing must be exactly as
they were, and a store that keeps working where nothing was planted (a whole ``images``
folder living on another disk stays allowed, as the reader allows it).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from broden_builder.cli import main as broden
from broden_builder.store.validate import validate_store
from conftest import build_synthetic


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def outside(tmp_path) -> Path:
    d = tmp_path / "outside"
    (d / "precious").mkdir(parents=True)
    (d / "precious" / "thesis.txt").write_text("years of work")
    (d / "doc.txt").write_text("a document")
    return d


@pytest.fixture
def store(synthetic_store, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(synthetic_store, dst)
    return dst


def _folder_entry(tmp_path: Path, prefix: str = "mine") -> Path:
    """A 3-image folder source with masks (values 1, 2 named)."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 20, 3), 40 * i, np.uint8)).save(root / "images" / f"im{i}.png")
        m = np.zeros((16, 20), np.uint8)
        m[:8] = 1
        m[8:] = 2
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    (root / "labels.csv").write_text("value,name\n1,widget\n2,gadget\n")
    entry = root / "entry.yaml"
    entry.write_text(f"type: folder\nprefix: {prefix}\nimages: {root / 'images'}\nmasks: {root / 'masks'}\n"
                     f"labels: {root / 'labels.csv'}\ncategory: object\n")
    return entry


def _plans(outside: Path) -> dict:
    return {
        "absolute source": {"moves": [[str(outside / "doc.txt"), "images/stolen.txt"]], "retire": []},
        "retire above the store": {"moves": [], "retire": ["../outside/precious"]},
        "target above the store": {"moves": [["tables/x.csv", "../outside/doc.txt"]], "retire": []},
        "retire an absolute path": {"moves": [], "retire": [str(outside / "precious")]},
    }


@pytest.mark.parametrize("work", [".broden-add", ".build"])
@pytest.mark.parametrize("plan_name", ["absolute source", "retire above the store", "target above the store",
                                       "retire an absolute path"])
@pytest.mark.parametrize("command", ["recover", "add"])
def test_a_planted_commit_plan_never_moves_or_deletes_outside(store, outside, tmp_path, capsys, work, plan_name,
                                                              command):
    (store / work).mkdir()
    (store / work / "tables").mkdir()
    (store / work / "tables" / "x.csv").write_text("x\n")
    (store / work / "COMMIT").write_text(json.dumps(_plans(outside)[plan_name]))
    before = _snapshot(outside)
    argv = ["recover", str(store)] if command == "recover" else ["add", str(store), "--source",
                                                                  str(_folder_entry(tmp_path))]
    assert broden(argv) == 1
    err = capsys.readouterr().err
    assert "COMMIT" in err and "refusing the commit" in err and "Traceback" not in err
    assert _snapshot(outside) == before
    # validate names the refused plan instead of recommending `broden recover`
    problems = [p.message for p in validate_store(store)]
    assert any("refusing the commit" in m for m in problems), problems


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"moves": [["a"]]}', '{"moves": [], "retire": [3]}'])
def test_a_malformed_commit_plan_is_a_named_error(store, capsys, text):
    (store / ".broden-add").mkdir()
    (store / ".broden-add" / "COMMIT").write_text(text)
    assert broden(["recover", str(store)]) == 1
    err = capsys.readouterr().err
    assert "COMMIT" in err and "Traceback" not in err and "unexpected" not in err


def test_a_symlinked_build_folder_is_refused_not_written_through(tmp_path, outside, capsys):
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / ".build")
    before = _snapshot(outside)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nsize: 32\nsegmentation_size: 16\nmin_frequency: 1\nmin_coverage: 0\n"
                      "sources:\n  - {type: synthetic, count: 4, seed: 0}\n")
    assert broden(["build", str(recipe), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert ".build" in err and "symbolic link" in err
    assert _snapshot(outside) == before


def test_a_symlinked_add_folder_is_refused_not_written_through(store, tmp_path, outside, capsys):
    os.symlink(outside, store / ".broden-add")
    before = _snapshot(outside)
    assert broden(["add", str(store), "--source", str(_folder_entry(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert ".broden-add" in err and "symbolic link" in err
    assert _snapshot(outside) == before


def test_add_never_writes_through_a_symlinked_images_subfolder(store, tmp_path, outside, capsys):
    os.symlink(outside, store / "images" / "mine")
    before = _snapshot(outside)
    index_before = (store / "index.csv").read_bytes()
    assert broden(["add", str(store), "--source", str(_folder_entry(tmp_path, "mine"))]) == 1
    err = capsys.readouterr().err
    assert "symbolic link" in err and "Traceback" not in err
    assert _snapshot(outside) == before
    assert (store / "index.csv").read_bytes() == index_before
    assert not (store / ".broden-add").exists()


def test_add_still_works_when_the_whole_images_folder_lives_elsewhere(store, tmp_path, capsys):
    elsewhere = tmp_path / "disk2" / "images"
    elsewhere.parent.mkdir()
    shutil.move(str(store / "images"), elsewhere)
    os.symlink(elsewhere, store / "images")
    assert broden(["add", str(store), "--source", str(_folder_entry(tmp_path))]) == 0
    assert (elsewhere / "mine" / "im0.jpg").is_file()
    assert [p for p in validate_store(store) if p.severity == 'error'] == []
