"""Pass 2 counted inside DataLoader workers (dissect.engine._tally_batches): the summed shares equal a plain
loop reference, workers or not; an error inside a worker reaches the user as one line."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from broden_builder import BrodenStore
from broden_builder.torch_dataset import BrodenDataset
from dissect.engine._activations import open_activations
from dissect.cli import main
from dissect.engine._passes import label_columns
from dissect.stats import Tally
from dissect.engine._tally_batches import TallyBatches, TallySpec, known_label_table
from test_stats_reference import reference_counts


def _segs(store: BrodenStore, rows, categories):
    """Per image {category: layers or numbers}, read through the store reader (not the tally's loader)."""
    out = []
    for i in rows:
        s = {}
        for c in categories:
            if c in store.image_level_categories:
                s[c] = [int(x) for x in store.image_labels(i, c)]
            else:
                s[c] = [np.asarray(layer, np.int64) for layer in store.pixel_layers(i, c)]
        out.append(s)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_shares_from_workers_sum_to_the_plain_reference(synthetic_store, workers):
    store = BrodenStore(synthetic_store)
    rows = list(range(len(store)))[:23]  # 23 images in batches of 5: the last batch is short
    categories = list(store.categories)
    numbers, primary, _ = label_columns(store, categories)
    sh, sw = store.rows[0].sh, store.rows[0].sw
    U = 3
    rng = np.random.default_rng(7)
    # maps already at the segmentation size, so 'nearest' is the identity and the reference needs no upsampler
    acts = rng.standard_normal((len(rows), U, sh, sw)).astype(np.float32)
    thr = np.array([np.quantile(acts[:, u], q) for u, q in enumerate((0.5, 0.9, 0.99))], np.float32)
    args = (numbers, categories, store.image_level_categories, primary)
    spec = TallySpec(args, {"a": torch.from_numpy(thr)}, "nearest", (sh, sw))
    labels = BrodenDataset(store, categories=categories, rows=rows, with_images=False)
    ds = TallyBatches(labels, {"a": open_activations(acts)}, range(len(rows)), 5,
                      known_label_table([l.number for l in store.labels]), spec)
    total = Tally(*args, "cpu")
    for item in DataLoader(ds, batch_size=None, num_workers=workers):
        assert "error" not in item
        total.add_counts(item["counts"]["a"])
    ref = reference_counts(acts, thr, _segs(store, rows, categories), numbers, primary, categories,
                           set(store.image_level_categories))
    assert total.images == len(rows)
    for k in ("I", "G", "A_original", "A_lite", "A_all"):
        np.testing.assert_array_equal(getattr(total, k).numpy(), ref[k], err_msg=k)


def test_take_counts_zeroes_and_add_counts_checks_shape():
    t = Tally([1, 2], ["object"], [], {1: "object", 2: "object"}, "cpu", units=2)
    t.I += 5
    t.images = 1
    share = t.take_counts()
    assert share["I"].dtype == torch.int32 and int(share["I"].sum()) == 20
    assert int(t.I.sum()) == 0 and t.images == 0
    other = Tally([1, 2], ["object"], [], {1: "object", 2: "object"}, "cpu", units=3)
    with pytest.raises(ValueError, match="2 units x 2 labels cannot be added to a tally of 3 units"):
        other.add_counts(share)


def _copy_with_a_label_png(synthetic_store, tmp_path, row: int) -> tuple:
    """(store folder, BrodenStore, path of a pixel-category label PNG of ``row``) of a copy of the store."""
    store_dir = tmp_path / "store"
    shutil.copytree(synthetic_store, store_dir)
    store = BrodenStore(store_dir)
    cat = next(c for c in store.categories if c not in store.image_level_categories and store.pixel_layers(row, c))
    return store_dir, store, store_dir / "images" / store.rows[row].cells[cat][0]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_unknown_label_number_in_a_worker_is_one_line(synthetic_store, tmp_path, capsys, workers):
    """A label PNG holding a number label.csv lacks: `dissect score` names index.csv and the row,
    with or without workers, and no worker traceback text reaches the user."""
    row = 7
    store_dir, store, path = _copy_with_a_label_png(synthetic_store, tmp_path, row)
    bad = 999 + max(l.number for l in store.labels)
    arr = np.array(Image.open(path).convert("RGB"))
    arr[0, 0] = (bad % 256, bad // 256, 0)  # Broden label PNGs: number = R + 256 * G
    Image.fromarray(arr).save(path)
    np.save(tmp_path / "a.npy", np.ones((len(store), 2, 2, 2), np.float32))
    code = main(["score", "--store", str(store_dir), "--activations", str(tmp_path / "a.npy"), "--out",
                 str(tmp_path / "o"), "--quiet", "--no-report", "--workers", workers])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"index.csv, row {row + 1}" in err and f"label number {bad}" in err and "not in label.csv" in err, err
    assert "Traceback" not in err and "worker" not in err and len(err.strip().splitlines()) == 1, err



def _error_classes():
    """Every exception class of both packages that defines its own __init__ (the ones pickle
    cannot rebuild from args alone unless they say how)."""
    import importlib
    import pkgutil

    import broden_builder
    import dissect

    seen = set()
    for pkg in (broden_builder, dissect):
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if ".sources." in m.name and m.name.count(".") > 2 or m.name.endswith("__main__"):
                continue
            try:
                mod = importlib.import_module(m.name)
            except Exception:
                continue
            for obj in vars(mod).values():
                if (isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__
                        and "__init__" in obj.__dict__):
                    seen.add(obj)
    return sorted(seen, key=lambda c: c.__qualname__)


def test_errors_with_their_own_init_cross_processes_unchanged():
    """An error raised in a DataLoader worker is sent back by pickle: each such class rebuilds with
    the same message (else the user would see it wrapped, 'StoreFormatError: ...')."""
    import inspect
    import pickle

    from pathlib import Path

    from broden_builder.download.transfer import ChecksumError
    from broden_builder.store.errors import StoreFormatError
    from broden_builder.store.locking import LockedError
    from dissect.capture._hooks import ForwardError

    samples = {StoreFormatError: StoreFormatError("a/b.png", "cannot read", 7),
               ForwardError: ForwardError(RuntimeError("boom")),
               ChecksumError: ChecksumError("http://127.0.0.1/x", Path("d/x.zip"), "sha256", "ab", "cd"),
               LockedError: LockedError("store", {"pid": 12, "host": "h", "command": "broden build", "since": "t"})}
    classes = _error_classes()
    assert StoreFormatError in classes and ForwardError in classes
    for cls in classes:
        assert cls in samples, f"{cls.__module__}.{cls.__qualname__} defines __init__{inspect.signature(cls.__init__)}: add a sample"
        e = samples[cls]
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is cls and str(back) == str(e)
    assert vars(pickle.loads(pickle.dumps(samples[StoreFormatError])))["row"] == 7


def test_unreadable_label_png_in_a_worker_is_the_store_error(synthetic_store, tmp_path, capsys):
    row = 5
    store_dir, store, path = _copy_with_a_label_png(synthetic_store, tmp_path, row)
    path.write_bytes(path.read_bytes()[:60])
    np.save(tmp_path / "a.npy", np.ones((len(store), 2, 2, 2), np.float32))
    code = main(["score", "--store", str(store_dir), "--activations", str(tmp_path / "a.npy"), "--out",
                 str(tmp_path / "o"), "--quiet", "--no-report", "--workers", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"error: {path}: cannot read segmentation of index.csv row {row + 1}"), err
    assert len(err.splitlines()) == 1, err


class _DiesInWorker(torch.utils.data.Dataset):
    """Item 1 kills its own worker process (what the kernel's OOM killer or kill -9 does)."""

    def __len__(self):
        return 3

    def __getitem__(self, k):
        if k == 1:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return {"index": torch.tensor([k])}


def test_a_killed_worker_is_one_clear_error(tmp_path):
    """A DataLoader worker killed from outside reached the user as 'unexpected RuntimeError ... this
    is a bug'; it is a DissectError naming the pass and saying how to resume."""
    from dissect.engine._checkpoint import Checkpoint
    from dissect.engine._distributed import dist_info
    from dissect.engine._passes import run_pass
    from dissect.errors import DissectError

    class Stats:
        added = 0

        def add(self, pass_no, acts, batch):
            Stats.added += 1

    class Bar:
        def update(self, n):
            pass

        def close(self):
            pass

    batches = DataLoader(_DiesInWorker(), batch_size=None, num_workers=1)
    with pytest.raises(DissectError, match=r"pass 2: DataLoader worker .*killed from outside.*resume"):
        run_pass(batches, lambda b: {}, Stats(), Checkpoint(None, {}, dist_info(), 0), 2, 0, Bar())
    assert Stats.added <= 1  # item 0 may or may not arrive before the worker dies
