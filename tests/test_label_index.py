"""Which images carry a concept: the cached index equals a brute-force scan of the planes."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from broden_builder import BrodenStore
from broden_builder.store import label_index as li


def _brute(store, number, split=None):
    hits = []
    for row in store.rows:
        if split and row.split != split:
            continue
        seg = store.segmentation(row.index)
        if any((number in v) if cat in store.image_level_categories else any((l == number).any() for l in v)
               for cat, v in seg.items()):
            hits.append(row.index)
    return hits


def test_index_matches_brute_force_and_is_cached(synthetic_store, tmp_path, monkeypatch):
    root = tmp_path / "s"
    shutil.copytree(synthetic_store, root)
    store = BrodenStore(root)
    for name in ("house", "wheel", "red-c", "park-s", "striped", "grass"):
        number = store.label(name).number
        assert store.images_with_label(name) == _brute(store, number)
        assert store.images_with_label(number, split="val") == _brute(store, number, "val")
    assert len(list((root / ".cache").glob("label_index-*.npz"))) == 1
    monkeypatch.setattr(li, "scan_label_index", lambda *a, **k: pytest.fail("the cached index must be reused"))
    assert BrodenStore(root).images_with_label("house") == _brute(store, store.label("house").number)


def test_cli_find(synthetic_store, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(synthetic_store, root)
    out = subprocess.run([sys.executable, "-m", "broden_builder.cli", "find", str(root), "car", "-q"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    store = BrodenStore(root)
    expected = [store.rows[i].image for i in _brute(store, store.label("car").number)]
    assert out.stdout.splitlines()[1:] == expected
    bad = subprocess.run([sys.executable, "-m", "broden_builder.cli", "find", str(root), "unicorn", "-q"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unicorn" in bad.stderr
