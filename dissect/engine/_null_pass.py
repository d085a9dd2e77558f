"""The null pass (``--null N``): each layer's permutation null, after pass 2's counts are summed.

1. The labels of every image of the run (all ranks' rows: a permutation pairs any two images)
   as per-pixel label combinations (dissect.stats.null_labels): pass 2's workers make them from the label lookup they
   do anyway (TallySpec.label_runs); the rows pass 2 did not see here (before a resume, other
   ranks' rows) are decoded in DataLoader workers.
2. The permutations are split into groups (by memory) and this rank's images into parts (one
   per worker); each (group, part) is counted in a DataLoader worker: it reads its activations
   in chunks, changes their basis and thresholds them with the pass-1 thresholds T_k into row
   intervals (dissect.stats.null_masks), and counts each chunk's mask pixels against the labels
   of its images' partners for every permutation of the group (dissect.stats.NullTally).
3. The counts are summed over parts and ranks (exact int64) and each permutation's best IoU per unit is
   scored with the observed tally's G, A_all and union rule.

Permutation k is numpy's default_rng([seed, k]) over the positions of the run's images, so batch
size, workers, ranks and resumes never change it. A group's counts fit in ``_COUNT_BUDGET``
bytes and its permutations (made where the group is counted) in ``_PERM_BUDGET``; each group
thresholds the activations again (each image once per group), and a large N is split into at
least ``_MIN_GROUPS`` groups so that progress lines come while it runs. What N permutations
cost to keep (their best IoUs, N x units float64 per layer) is checked before pass 1
(:func:`check_null_memory`).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from broden_builder.torch_dataset import BrodenDataset, collate_broden

from ..errors import DissectError

from ._basis import apply_basis
from ._distributed import all_reduce_sum_
from ..stats import LabelRuns, LabelRunsBuilder, NullTally, Tally, mask_intervals, permutations
from ..stats.null import pixel_keys

# bytes of the per-permutation counts (N x U x (L + 2 C) int64) held at once
_COUNT_BUDGET = 1 << 30
# bytes of one group's permutations (int64 [group, images]) held at once
_PERM_BUDGET = 1 << 28
# a null of more than _MIN_GROUP_SIZE x _MIN_GROUPS permutations is counted in at least this many groups
_MIN_GROUPS, _MIN_GROUP_SIZE = 20, 100
# bytes of the null's result (each permutation's best IoU per unit, float64, all layers) a run may keep
NULL_RESULT_BUDGET = 2 << 30
# mask cells ([images, U, h, w] activations) thresholded per chunk
_CHUNK_CELLS = 1 << 23


class _LabelParts(Dataset):
    """Item k: the LabelRunsBuilder part of batch k of ``rows`` (decoded and made in a DataLoader worker)."""

    def __init__(self, store, rows: Sequence[int], categories, tally_args: tuple, size: tuple, batch_size: int):
        self.ds = BrodenDataset(store, categories=categories, rows=list(rows), with_images=False)
        self.tally_args, self.size, self.batch_size = tally_args, size, int(batch_size)
        self.tally: Optional[Tally] = None  # made once per process
        self.builder: Optional[LabelRunsBuilder] = None

    def __len__(self) -> int:
        return -(-len(self.ds) // self.batch_size)

    def __getitem__(self, k: int) -> dict:
        if self.tally is None:
            self.tally = _cpu_tally(self.tally_args)
            self.builder = label_builder(self.tally, self.size)
        lo, hi = k * self.batch_size, min(len(self.ds), (k + 1) * self.batch_size)
        seg = collate_broden([self.ds[i] for i in range(lo, hi)])["seg"]  # broden_builder's collated dict
        assert self.builder is not None
        return self.builder.part(self.tally.batch_labels(seg, self.size))


def _cpu_tally(tally_args: tuple) -> Tally:
    """A CPU Tally of the run's label columns (numbers, categories, image-level categories, primary)."""
    numbers, categories, image_level, primary = tally_args
    return Tally(numbers, categories, image_level, primary, device="cpu")


def label_builder(tally: Tally, size: tuple) -> LabelRunsBuilder:
    """The LabelRunsBuilder of ``tally``'s label columns at segmentation size (sh, sw)."""
    prim = torch.tensor([tally.categories.index(c) for c in tally.primary], dtype=torch.long)
    return LabelRunsBuilder(tally.n_labels, prim, len(tally.categories), size)


def label_runs(
    store,
    rows: Sequence[int],
    categories,
    tally_args: tuple,
    size: tuple,
    batch_size: int,
    workers: int,
    known: Optional[tuple] = None,
) -> LabelRuns:
    """The LabelRuns of index.csv ``rows`` (in order): label planes decoded and turned into per-pixel combinations
    in ``workers`` processes, batch by batch. ``known``: (first, parts) -- the parts of rows
    first, first + 1, ... already made (by pass 2's workers), which are not decoded again."""
    first, parts = known if known is not None else (0, [])
    done = sum(int(p["Z"].shape[0]) for p in parts)
    builder = label_builder(_cpu_tally(tally_args), size)
    for lo, hi in ((0, first), (first, first + done), (first + done, len(rows))):
        if lo == first and hi == first + done:
            for p in parts:
                builder.add(p)
            continue
        if hi <= lo:
            continue
        ds = _LabelParts(store, list(rows)[lo:hi], categories, tally_args, size, batch_size)
        for part in DataLoader(
            ds,
            batch_size=None,
            shuffle=False,
            num_workers=min(workers, len(ds)),
            prefetch_factor=2 if workers else None,
        ):
            builder.add(part)
    return builder.finish()


class _Group:
    """Permutations ``start`` .. ``start + count - 1`` of ``n`` positions for ``seed``, made on demand
    (in the worker that counts them: only ``count`` x ``n`` int64 at a time)."""

    def __init__(self, n: int, seed: int, start: int, count: int):
        self.n, self.seed, self.start, self.count = n, seed, start, count

    def perms(self) -> torch.Tensor:
        return permutations(self.n, self.seed, self.count, self.start)


def group_size(N: int, images: int, units: int, n_labels: int, categories: int) -> int:
    """Permutations per group: the counts (units x (n_labels + 2 categories) int64 each) within
    _COUNT_BUDGET, the permutations (images int64 each) within _PERM_BUDGET, and at least
    _MIN_GROUPS groups once N exceeds _MIN_GROUP_SIZE x _MIN_GROUPS."""
    by_counts = _COUNT_BUDGET // max(1, units * (n_labels + 2 * categories) * 8)
    by_perms = _PERM_BUDGET // max(1, images * 8)
    by_progress = max(_MIN_GROUP_SIZE, -(-N // _MIN_GROUPS))
    return max(1, min(by_counts, by_perms, by_progress, N))


def check_null_memory(units: dict, N: int) -> None:
    """DissectError before any pass when keeping N permutations' best IoUs of layers ``units``
    {layer: units (or SAE features)} would exceed NULL_RESULT_BUDGET bytes (N x units float64 each)."""
    total = sum(int(u) for u in units.values())
    need = N * total * 8
    if N and need > NULL_RESULT_BUDGET:
        most = max(1, NULL_RESULT_BUDGET // (8 * max(1, total)))
        raise DissectError(
            f"--null {N:,} keeps {need / 2**30:.1f} GiB of null IoUs ({N:,} permutations x {total:,} units of "
            f"{len(units)} layer(s), float64); at most {NULL_RESULT_BUDGET // 2**30} GiB: give --null {most:,} "
            f"or fewer, or fewer layers per run"
        )


class _PermutationGroups(Dataset):
    """Item g * parts + p: the NullTally counts (I, A_original, A_lite) of permutation group g of one
    layer over part p of this rank's images (masks thresholded in whichever process counts, each
    image once per group; see :func:`layer_null`)."""

    def __init__(
        self,
        source,
        positions: Sequence[int],
        first: int,
        groups: list,
        labels: LabelRuns,
        shape: tuple,
        n_labels: int,
        categories: int,
        thresholds: torch.Tensor,
        basis,
        mode: str,
        union: str,
        parts: int = 1,
    ):
        self.keys = pixel_keys(labels, shape[0])  # made once, shared by the forked workers
        self.areas = (union,) if union in ("original", "lite") else ()  # the run's union rule only
        self.source, self.positions, self.first, self.groups = source, list(positions), first, groups
        self.labels, self.shape, self.L, self.C = labels, shape, n_labels, categories
        self.T, self.basis, self.mode = thresholds.detach().cpu().float(), basis, mode
        self.parts = max(1, int(parts))

    def __len__(self) -> int:
        return len(self.groups) * self.parts

    def __getitem__(self, item: int) -> tuple:
        g, p = divmod(item, self.parts)
        U, h, w = self.shape
        nt = NullTally(self.groups[g].perms(), self.labels, U, self.L, self.C, self.keys, self.areas)
        chunk = max(1, _CHUNK_CELLS // max(1, U * h * w))
        n = len(self.positions)
        for lo in range(p * n // self.parts, (p + 1) * n // self.parts, chunk):
            lo_end = min((p + 1) * n // self.parts, lo + chunk)
            a = torch.from_numpy(np.asarray(self.source.rows(self.positions[lo:lo_end])))
            a = a.reshape(a.shape[0], U, h, w)
            a = a if self.basis is None else apply_basis(a.float(), self.basis.cpu())
            nt.add(
                mask_intervals(a, self.T, self.labels.size, self.mode),
                range(self.first + lo, self.first + lo + a.shape[0]),
            )
        return nt.I, nt.A_original, nt.A_lite


def layer_groups(N: int, n_images: int, seed: int, units: int, n_labels: int, categories: int) -> list:
    """The _Group s that cover permutations 0 .. N - 1 (sizes by :func:`group_size`)."""
    size = group_size(N, n_images, units, n_labels, categories)
    return [_Group(n_images, seed, g0, min(size, N - g0)) for g0 in range(0, N, size)]


def layer_null(
    source,
    positions: Sequence[int],
    first: int,
    N: int,
    n_images: int,
    seed: int,
    labels: LabelRuns,
    tally: Tally,
    thresholds: torch.Tensor,
    basis,
    mode: str,
    union: str,
    device,
    workers: int = 0,
    split: int = 1,
    bar=None,
) -> np.ndarray:
    """float64 [N, U]: each permutation's best IoU per unit of one layer, for permutations 0 .. N - 1
    of ``n_images`` run positions with ``seed`` (:func:`permutation`). ``source``: its
    Activations (rows ``positions``, this rank's images, at run positions first, first + 1, ...);
    ``tally``: the observed Tally, summed over ranks; ``thresholds`` [U]; ``basis`` [U, U] or None.
    The permutations are split into groups of at most _COUNT_BUDGET bytes of counts each, and this
    rank's images into ``split`` parts (every rank must give the same ``split``); each (group, part)
    is counted in one of ``workers`` DataLoader processes (so each image is thresholded once per
    group), the parts summed, each group summed over ranks and scored in order: exact integer
    sums, so the result depends on none of these."""
    U, h, w = (int(x) for x in source.shape[1:]) if len(source.shape) == 4 else (int(source.shape[1]), 1, 1)
    L, C = tally.n_labels, len(tally.categories)
    prim = torch.tensor([tally.categories.index(c) for c in tally.primary], dtype=torch.long)
    groups = layer_groups(N, n_images, seed, U, L, C)
    parts = max(1, split)
    ds = _PermutationGroups(
        source, positions, first, groups, labels, (U, h, w), L, C, thresholds, basis, mode, union, parts
    )
    best: list = []
    counts: list = []
    for item, got in enumerate(
        DataLoader(
            ds,
            batch_size=None,
            shuffle=False,
            num_workers=min(workers, len(ds)),
            prefetch_factor=1 if workers else None,
        )
    ):
        counts = list(got) if item % parts == 0 else [a + b for a, b in zip(counts, got)]
        if item % parts < parts - 1:
            continue
        nt = NullTally(groups[len(best)].perms(), labels, U, L, C, areas=ds.areas)
        nt.I, nt.A_original, nt.A_lite = counts
        all_reduce_sum_([nt.I, nt.A_original, nt.A_lite], device)
        best.append(nt.best_iou(tally.G, tally.A_all, prim, union))
        if bar is not None:
            bar.update(groups[len(best) - 1].count)
    return torch.cat(best).numpy()


def null_pass(run, stats, sources: dict, positions: Sequence[int], known: Optional[tuple] = None) -> dict:
    """{layer: float64 [N, U]} for ``run`` (dissect.engine.Run) after pass 2 (``stats`` summed over
    ranks); ``sources`` {layer: Activations}, ``positions`` this rank's rows in them; ``known``
    (first run position, label parts) made by pass 2 (see :func:`label_runs`)."""
    from broden_builder.shared import progress

    cfg, t0 = run.cfg, time.perf_counter()
    workers = run.parallel.tally_workers
    split = torch.tensor([max(1, workers)], dtype=torch.long)  # image parts: one per worker, the same on every rank
    all_reduce_sum_([split], stats.device)
    split = max(1, int(split) // run.info.world)
    labels = label_runs(
        run.store, run.rows, run.categories, stats.tally_args, tuple(run.seg_size), cfg.batch_size, workers, known
    )
    n_images = len(run.rows)
    bar = progress(
        total=cfg.null * len(sources),  # permutations x layers, counted as each group is scored
        desc=f"null ({cfg.null:,} permutations" + (f" x {len(sources)} layers)" if len(sources) > 1 else ")"),
        unit="permutation",
        quiet=cfg.quiet or run.info.rank != 0,
        leave=False,
    )
    out = {}
    for n, src in sources.items():
        out[n] = layer_null(
            src,
            positions,
            run.start,
            cfg.null,
            n_images,
            cfg.seed,
            labels,
            stats.layers[n].tally,
            stats.thresholds[n],
            stats.bases.get(n),
            cfg.upsample,
            cfg.union,
            stats.device,
            workers,
            split,
            bar,
        )
    bar.close()
    run.timings["null"] = time.perf_counter() - t0
    return out


__all__ = ["null_pass", "layer_null", "layer_groups", "check_null_memory", "label_runs", "label_builder"]
