"""Store folders planted or left behind: lock-holder debris is swept, a planted label-index cache
is neither written through nor trusted.

Oracles: the outside folder's listing (must stay empty); the rows carrying a label, computed
here by a plain loop over index.csv and the label PNGs (R + 256 G, docs/format.md "Pixel encoding"), not by
the label index.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from broden_builder import BrodenStore
from broden_builder.store.locking import exclusive


def _rows_with_label(store: Path, number: int) -> list:
    """Plain reference: 0-based rows whose pixel planes or image-level cells hold ``number``."""
    with open(store / "index.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, row in enumerate(rows):
        found = False
        for col, cell in row.items():
            if col in ("image", "split", "ih", "iw", "sh", "sw") or not cell:
                continue
            for item in cell.split(";"):
                if item.endswith(".png"):
                    a = np.asarray(Image.open(store / "images" / item).convert("RGB")).astype(np.int64)
                    found |= bool(((a[..., 0] + 256 * a[..., 1]) == number).any())
                else:
                    found |= int(item) == number
        if found:
            out.append(i)
    return out


@pytest.fixture
def store(synthetic_store, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(synthetic_store, dst)
    return dst


def test_stale_lock_holder_temp_files_are_swept_when_the_lock_is_taken(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    debris = folder / "..lock.holder.k3j2h1g0.tmp"  # a holder killed between its write and rename
    debris.write_text("{")
    keep = folder / "notes.tmp"  # not ours: stays
    keep.write_text("x")
    with exclusive(folder, "test"):
        pass
    assert not debris.exists() and keep.exists()


def test_a_symlinked_cache_folder_is_not_written_through(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(store / ".cache", ignore_errors=True)  # the shared fixture store may carry a cache already
    os.symlink(outside, store / ".cache")
    number = 1
    got = BrodenStore(store).images_with_label(number)
    assert got == _rows_with_label(store, number)
    assert list(outside.iterdir()) == []


def test_a_planted_inconsistent_cache_is_not_trusted(store):
    s = BrodenStore(store)
    number = 1
    truth = _rows_with_label(store, number)
    from broden_builder.store.label_index import _cache_file

    cache = _cache_file(s)
    cache.parent.mkdir(parents=True, exist_ok=True)
    bogus_rows = np.array([len(s.rows) + 5], np.int64)  # a row that does not exist
    np.savez(cache, numbers=np.array([number], np.int64), offsets=np.array([0, 1], np.int64), rows=bogus_rows)
    assert BrodenStore(store).images_with_label(number) == truth


@pytest.mark.parametrize("command", ["recover", "add"])
def test_add_and_recover_write_nothing_into_a_folder_that_is_not_a_store(tmp_path, capsys, command):
    from broden_builder.cli import main as broden

    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    entry = tmp_path / "e.yaml"
    entry.write_text("type: synthetic\ncount: 2\n")
    argv = ["recover", str(folder)] if command == "recover" else ["add", str(folder), "--source", str(entry)]
    assert broden(argv) == 1
    assert "not a Broden store" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
