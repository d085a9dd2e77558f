"""The permutation null's counts equal the Tally's counts of the permuted pairing, on every path.

Oracle: for permutation k (the masks of image i meet the labels of image perm[i]), the plain Tally
is run on the activations moved to their partner image; its I, A_original, A_lite and best IoU per
unit must equal NullTally's, for each union rule. NullTally is run with its bounds shrunk so that
every code path is taken: mask pixels expanded a few images at a time and one image at a time
(_MAX_PIXELS), the (combination, unit) counts by torch.unique instead of dense bins (_MAX_BINS),
and int64 pixel keys.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from broden_builder.store.reader import BrodenStore
from broden_builder.torch_dataset import BrodenDataset, collate_broden
from conftest import build_synthetic
from dissect.engine import label_columns
from dissect.stats import LabelRunsBuilder, NullTally, Tally, mask_intervals, permutations
from dissect.stats import null as null_module
from dissect.stats.null import pixel_keys

U, N, CHUNK = 12, 4, 7


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("null_counts") / "store"
    build_synthetic(out, count=30, seg=32)
    store = BrodenStore(out)
    cats = list(store.categories)
    numbers, primary, _ = label_columns(store, cats)
    args = (numbers, cats, store.image_level_categories, primary)
    n = len(store.rows)
    ds = BrodenDataset(store, categories=cats, rows=list(range(n)), with_images=False)
    batches = [collate_broden([ds[i] for i in range(lo, min(n, lo + 8))]) for lo in range(0, n, 8)]
    acts = torch.from_numpy(np.random.default_rng(0).normal(size=(n, U, 5, 5)).astype(np.float32))
    T = torch.quantile(acts.permute(1, 0, 2, 3).reshape(U, -1), 0.8, dim=1)
    return args, batches, acts, T, n


def _null(world, keys_long: bool):
    args, batches, acts, T, n = world
    size = batches[0]["seg"].size
    t0 = Tally(*args, units=U)
    builder = LabelRunsBuilder(t0.n_labels, t0._prim, len(args[1]), size)
    for bt in batches:
        builder.add(t0.batch_labels(bt["seg"], size))
        t0.add_activations(acts[bt["index"]], T, bt["seg"], size=size)
    labels = builder.finish()
    perms = permutations(n, 5, N)
    keys = pixel_keys(labels, U).long() if keys_long else None
    nt = NullTally(perms, labels, U, t0.n_labels, len(args[1]), keys)
    for lo in range(0, n, CHUNK):
        pos = list(range(lo, min(n, lo + CHUNK)))
        nt.add(mask_intervals(acts[pos], T, size), pos)
    return t0, nt, perms


@pytest.mark.parametrize(
    "most_pixels, most_bins, keys_long",
    [(1 << 24, 1 << 24, False), (3000, 1 << 24, False), (1, 0, False), (5000, 0, True)],
)
def test_null_counts_equal_the_tally_of_the_permuted_pairing(world, monkeypatch, most_pixels, most_bins, keys_long):
    monkeypatch.setattr(null_module, "_MAX_PIXELS", most_pixels)
    monkeypatch.setattr(null_module, "_MAX_BINS", most_bins)
    args, batches, acts, T, n = world
    size = batches[0]["seg"].size
    t0, nt, perms = _null(world, keys_long)
    for union in ("original", "lite", "all"):
        best = nt.best_iou(t0.G, t0.A_all, t0._prim, union)
        for k in range(N):
            moved = torch.empty_like(acts)
            moved[perms[k]] = acts  # label image perm[i] gets the masks of image i
            t = Tally(*args, units=U)
            for bt in batches:
                t.add_activations(moved[bt["index"]], T, bt["seg"], size=size)
            assert torch.equal(t.I, nt.I[k]), (union, k)
            assert torch.equal(t.A_original, nt.A_original[k]) and torch.equal(t.A_lite, nt.A_lite[k]), (union, k)
            assert torch.equal(t.iou(union).amax(1), best[k]), (union, k)


def test_only_the_runs_union_area_is_counted(world):
    """areas=('original',): the same I and A_original as counting both, A_lite left 0, and asking
    for the 'lite' IoU is a clear error instead of a silently wrong null."""
    args, batches, acts, T, n = world
    size = batches[0]["seg"].size
    t0, full, perms = _null(world, False)
    labels = full.labels
    one = NullTally(perms, labels, U, t0.n_labels, len(args[1]), areas=("original",))
    for lo in range(0, n, CHUNK):
        pos = list(range(lo, min(n, lo + CHUNK)))
        one.add(mask_intervals(acts[pos], T, size), pos)
    assert torch.equal(one.I, full.I) and torch.equal(one.A_original, full.A_original)
    assert int(one.A_lite.abs().sum()) == 0 and int(full.A_lite.sum()) > 0
    assert torch.equal(one.best_iou(t0.G, t0.A_all, t0._prim, "original"), full.best_iou(t0.G, t0.A_all, t0._prim, "original"))
    with pytest.raises(ValueError, match="'lite' union"):
        one.best_iou(t0.G, t0.A_all, t0._prim, "lite")
