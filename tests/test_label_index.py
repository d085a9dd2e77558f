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
    before = sorted(root.rglob("*"))  # the copy may hold a label cache (STORE/.cache/labels) of earlier dissections
    for name in ("house", "wheel", "red-c", "park-s", "striped", "grass"):
        number = store.label(name).number
        assert store.images_with_label(name) == _brute(store, number)
        assert store.images_with_label(number, split="val") == _brute(store, number, "val")
    assert li._cache_file(store).is_file() and sorted(root.rglob("*")) == before  # never written into the store
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


def test_an_edited_label_png_is_not_answered_from_the_cache(synthetic_store, tmp_path, capsys):
    """Issue 25: the cache key covers the planes, not only the tables (oracle: the brute-force scan)."""
    import os

    from PIL import Image

    from broden_builder.cli import main as broden

    root = tmp_path / "s"
    shutil.copytree(synthetic_store, root)
    store = BrodenStore(root)
    car = store.label("car").number
    assert broden(["find", str(root), "car", "-q"]) == 0
    before = capsys.readouterr().out.splitlines()[1:]
    # paint one plane of an image without a car full of car, keeping size and (almost) mtime
    row = next(r for r in store.rows if r.index not in _brute(store, car) and r.cells["object"])
    png = root / "images" / row.cells["object"][0]
    st = os.stat(png)
    Image.fromarray(np.full((row.sh, row.sw, 3), [car % 256, car // 256, 0], np.uint8)).save(png)
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert broden(["find", str(root), "car", "-q"]) == 0
    after = capsys.readouterr().out.splitlines()[1:]
    assert row.image in after and row.image not in before
    assert after == [store.rows[i].image for i in _brute(BrodenStore(root), car)]


def test_find_writes_nothing_into_a_read_only_store(synthetic_store, tmp_path, capsys):
    import os

    from broden_builder.cli import main as broden

    root = tmp_path / "s"
    shutil.copytree(synthetic_store, root)
    shutil.rmtree(root / ".cache", ignore_errors=True)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    os.chmod(root, 0o555)
    try:
        assert broden(["find", str(root), "car", "-q"]) == 0
    finally:
        os.chmod(root, 0o755)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert "Traceback" not in capsys.readouterr().err
