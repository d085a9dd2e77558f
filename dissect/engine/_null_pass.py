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
bytes; each group thresholds the activations again (each image once per group).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from broden_builder.torch_dataset import BrodenDataset, collate_broden

from ._basis import apply_basis
from ._distributed import all_reduce_sum_
from ..stats import LabelRuns, LabelRunsBuilder, NullTally, Tally, mask_intervals, permutations
from ..stats.null import pixel_keys

# bytes of the per-permutation counts (N x U x (L + 2 C) int64) held at once
_COUNT_BUDGET = 1 << 30
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
        nt = NullTally(self.groups[g], self.labels, U, self.L, self.C, self.keys, self.areas)
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


def layer_null(
    source,
    positions: Sequence[int],
    first: int,
    perms: torch.Tensor,
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
    """float64 [N, U]: each permutation's best IoU per unit of one layer. ``source``: its
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
    N = perms.shape[0]
    size = min(max(1, _COUNT_BUDGET // max(1, U * (L + 2 * C) * 8)), N)
    groups = [perms[g0 : g0 + size] for g0 in range(0, N, size)]
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
        nt = NullTally(groups[len(best)], labels, U, L, C, areas=ds.areas)
        nt.I, nt.A_original, nt.A_lite = counts
        all_reduce_sum_([nt.I, nt.A_original, nt.A_lite], device)
        best.append(nt.best_iou(tally.G, tally.A_all, prim, union))
        if bar is not None:
            bar.update(1)
    return torch.cat(best).numpy()


def null_pass(run, stats, sources: dict, positions: Sequence[int], known: Optional[tuple] = None) -> dict:
    """{layer: float64 [N, U]} for ``run`` (dissect.engine.Run) after pass 2 (``stats`` summed over
    ranks); ``sources`` {layer: Activations}, ``positions`` this rank's rows in them; ``known``
    (first run position, label parts) made by pass 2 (see :func:`label_runs`)."""
    from broden_builder.shared import progress

    cfg, t0 = run.cfg, time.perf_counter()
    perms = permutations(len(run.rows), cfg.seed, cfg.null)
    workers = run.parallel.tally_workers
    split = torch.tensor([max(1, workers)], dtype=torch.long)  # image parts: one per worker, the same on every rank
    all_reduce_sum_([split], stats.device)
    split = max(1, int(split) // run.info.world)
    labels = label_runs(
        run.store, run.rows, run.categories, stats.tally_args, tuple(run.seg_size), cfg.batch_size, workers, known
    )
    bar = progress(
        total=None,
        desc=f"null ({cfg.null} permutations)",
        unit="group",
        quiet=cfg.quiet or run.info.rank != 0,
        leave=False,
    )
    out = {}
    for n, src in sources.items():
        out[n] = layer_null(
            src,
            positions,
            run.start,
            perms,
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


__all__ = ["null_pass", "layer_null", "label_runs", "label_builder"]
