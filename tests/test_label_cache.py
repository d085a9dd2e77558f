"""The label cache (broden_builder.store.label_cache): a second `dissect score` on one store reads the
decoded planes instead of the PNGs, with counts identical to decoding; never stale after a PNG changes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from broden_builder import BrodenStore
from broden_builder.store.format import encode_label_png
from broden_builder.store.label_cache import CACHE_DIR, LabelCache, rle_encode
from dissect.cli import main


@pytest.fixture()
def store(synthetic_store, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(synthetic_store, dst, ignore=shutil.ignore_patterns(".cache"))  # other tests' runs cache there
    return dst


def _acts(store: Path, path: Path) -> Path:
    n = len(BrodenStore(store))
    a = np.random.default_rng(3).random((n, 6, 4, 4), dtype=np.float32)
    np.save(path, a)
    return path


def _score(store: Path, acts: Path, out: Path, *extra) -> np.ndarray:
    args = ["score", "--store", str(store), "--activations", str(acts), "--out", str(out), "--quiet",
            "--no-report", "--workers", "0", "--batch-size", "8", "--device", "cpu", *extra]
    assert main(args) == 0
    layer = next(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    return (layer / "tally.csv").read_text()


def _count_decodes(monkeypatch) -> list:
    """Record the relative path of every label PNG decoded from now on (workers 0: in this process)."""
    calls = []
    real = BrodenStore.load_label_png

    def counting(self, relpath, row=None):
        calls.append(relpath)
        return real(self, relpath, row)

    monkeypatch.setattr(BrodenStore, "load_label_png", counting)
    return calls


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for plane in (rng.integers(0, 3, (7, 9)), np.zeros((4, 4), np.int64), np.full((1, 5), 1200), np.zeros((0, 3))):
        v, n = rle_encode(plane)
        assert n.sum() == plane.size and np.all(n > 0)
        assert np.all(v[1:] != v[:-1])  # maximal runs
        np.testing.assert_array_equal(np.repeat(v, n).reshape(plane.shape), plane)


def test_second_score_reads_no_png_and_counts_identical(store, tmp_path, monkeypatch):
    acts = _acts(store, tmp_path / "a.npy")
    plain = _score(store, acts, tmp_path / "plain", "--no-label-cache")
    assert not (store / CACHE_DIR).exists()  # --no-label-cache writes nothing
    first = _score(store, acts, tmp_path / "o1")
    assert list((store / CACHE_DIR).rglob("*.npz"))
    calls = _count_decodes(monkeypatch)
    second = _score(store, acts, tmp_path / "o2")
    assert calls == []  # every plane came from the cache
    assert first == plain and second == plain


def test_edited_png_is_decoded_again(store, tmp_path, monkeypatch):
    acts = _acts(store, tmp_path / "a.npy")
    _score(store, acts, tmp_path / "o1")
    s = BrodenStore(store)
    row = next(i for i in range(len(s)) if s.rows[i].cells.get("object"))
    rel = s.rows[row].cells["object"][0]
    plane = s.load_label_png(rel, row)
    other = next(l.number for l in s.labels if "object" in l.categories and l.number not in np.unique(plane))
    plane[: plane.shape[0] // 2] = other  # the top half becomes another object
    from PIL import Image

    Image.fromarray(encode_label_png(plane)).save(s.resolve(rel))
    fresh = _score(store, acts, tmp_path / "fresh", "--no-label-cache")
    calls = _count_decodes(monkeypatch)
    again = _score(store, acts, tmp_path / "o2")
    assert again == fresh
    assert rel in calls  # the edited file was decoded, not served stale


def test_size_limit_and_unwritable_folder(store, tmp_path, monkeypatch):
    s = BrodenStore(store)
    cats = list(s.categories)
    from broden_builder.torch_dataset import BrodenDataset

    ds = BrodenDataset(s, with_images=False)
    items = [ds[i] for i in range(8)]
    probe = LabelCache(s, cats, folder=tmp_path / "probe")
    probe.put(list(range(4)), items[:4])
    one = next(probe.folder.glob("*.npz")).stat().st_size
    cache = LabelCache(s, cats, limit_bytes=int(one * 1.5))  # room for one segment: the older one goes
    cache.put(list(range(4)), items[:4])
    cache.put(list(range(4, 8)), items[4:])
    assert len(list(cache.folder.glob("*.npz"))) == 1
    got = cache.get(list(range(4, 8)))
    assert got is not None and cache.get(list(range(4))) is None
    for a, b in zip(got, items[4:]):  # what comes back is what was put, plane for plane
        assert a["index"] == b["index"]
        for c in b["pixel"]:
            assert a["pixel"][c].equal(b["pixel"][c])
        for c in b["image_level"]:
            assert a["image_level"][c].equal(b["image_level"][c])
    ro = LabelCache(s, cats, folder=tmp_path / "file-not-folder" / "x")
    (tmp_path / "file-not-folder").write_text("a file where the cache folder would go")
    ro.put([0], items[:1])  # cannot write: the run goes on, the cache switches itself off
    assert ro.writable is False and ro.get([0]) is None
