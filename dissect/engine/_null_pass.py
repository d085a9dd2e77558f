"""The null pass (``--null N``): each layer's permutation null, after pass 2's counts are summed.

1. The labels of every image of the run (all ranks' rows: a permutation pairs any two images)
   are decoded once into row runs (dissect.stats.null_labels), in DataLoader workers.
2. This rank's activations are read again in chunks, changed of basis and thresholded with the
   pass-1 thresholds T_k into row intervals (dissect.stats.null_masks); each chunk is counted
   against the labels of its images' partners for every permutation (dissect.stats.NullTally).
3. The counts are summed over ranks (exact int64) and each permutation's best IoU per unit is
   scored with the observed tally's G, A_all and union rule.

Permutation k is numpy's default_rng([seed, k]) over the positions of the run's images, so batch
size, workers, ranks and resumes never change it. Permutations are processed in groups whose
counts fit in ``_COUNT_BUDGET`` bytes; each extra group reads the activations again.
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

# bytes of the per-permutation counts (N x U x (L + 2 C) int64) held at once
_COUNT_BUDGET = 1 << 30
# mask cells ([images, U, h, w] activations) thresholded per chunk
_CHUNK_CELLS = 1 << 23


class _LabelParts(Dataset):
    """Item k: the LabelRunsBuilder part of batch k of ``rows`` (decoded and made in a DataLoader worker)."""

    def __init__(self, store, rows: Sequence[int], categories, tally_args: tuple, size: tuple, batch_size: int):
        self.ds = BrodenDataset(store, categories=categories, rows=list(rows), with_images=False)
        self.tally_args, self.size, self.batch_size = tally_args, size, int(batch_size)
        self.tally = self.builder = None  # made once per process

    def __len__(self) -> int:
        return -(-len(self.ds) // self.batch_size)

    def __getitem__(self, k: int) -> dict:
        if self.tally is None:
            self.tally = Tally(*self.tally_args, "cpu")
            self.builder = label_builder(self.tally, self.size)
        lo, hi = k * self.batch_size, min(len(self.ds), (k + 1) * self.batch_size)
        batch = collate_broden([self.ds[i] for i in range(lo, hi)])
        return self.builder.part(self.tally.batch_labels(batch["seg"], self.size))


def label_builder(tally: Tally, size: tuple) -> LabelRunsBuilder:
    """The LabelRunsBuilder of ``tally``'s label columns at segmentation size (sh, sw)."""
    prim = torch.tensor([tally.categories.index(c) for c in tally.primary], dtype=torch.long)
    return LabelRunsBuilder(tally.n_labels, prim, len(tally.categories), size)


def label_runs(store, rows: Sequence[int], categories, tally_args: tuple, size: tuple, batch_size: int,
               workers: int, known: Optional[tuple] = None) -> LabelRuns:
    """The LabelRuns of index.csv ``rows`` (in order): label planes decoded and turned into row runs
    in ``workers`` processes, batch by batch. ``known``: (first, parts) -- the parts of rows
    first, first + 1, ... already made (by pass 2's workers), which are not decoded again."""
    first, parts = known if known is not None else (0, [])
    done = sum(int(p["Z"].shape[0]) for p in parts)
    builder = label_builder(Tally(*tally_args, "cpu"), size)
    for lo, hi in ((0, first), (first, first + done), (first + done, len(rows))):
        if lo == first and hi == first + done:
            for p in parts:
                builder.add(p)
            continue
        if hi <= lo:
            continue
        ds = _LabelParts(store, list(rows)[lo:hi], categories, tally_args, size, batch_size)
        for part in DataLoader(ds, batch_size=None, shuffle=False, num_workers=min(workers, len(ds)),
                               prefetch_factor=2 if workers else None):
            builder.add(part)
    return builder.finish()


def layer_null(source, positions: Sequence[int], first: int, perms: torch.Tensor, labels: LabelRuns,
               tally: Tally, thresholds: torch.Tensor, basis, mode: str, union: str, device, bar=None) -> np.ndarray:
    """float64 [N, U]: each permutation's best IoU per unit of one layer. ``source``: its
    Activations (rows ``positions``, this rank's images, at run positions first, first + 1, ...);
    ``tally``: the observed Tally, summed over ranks; ``thresholds`` [U]; ``basis`` [U, U] or None."""
    U, h, w = (int(x) for x in source.shape[1:]) if len(source.shape) == 4 else (int(source.shape[1]), 1, 1)
    L, C = tally.n_labels, len(tally.categories)
    prim = torch.tensor([tally.categories.index(c) for c in tally.primary], dtype=torch.long)
    group = max(1, _COUNT_BUDGET // max(1, U * (L + 2 * C) * 8))
    chunk = max(1, _CHUNK_CELLS // max(1, U * h * w))
    T = thresholds.detach().cpu().float()
    best = []
    for g0 in range(0, perms.shape[0], group):
        nt = NullTally(perms[g0: g0 + group], labels, U, L, C)
        for lo in range(0, len(positions), chunk):
            a = torch.from_numpy(np.asarray(source.rows(list(positions[lo: lo + chunk]))))
            a = a.reshape(a.shape[0], U, h, w)
            a = a if basis is None else apply_basis(a.float(), basis.cpu())
            nt.add(mask_intervals(a, T, labels.size, mode), range(first + lo, first + lo + a.shape[0]))
            if bar is not None:
                bar.update(a.shape[0])
        all_reduce_sum_([nt.I, nt.A_original, nt.A_lite], device)
        best.append(nt.best_iou(tally.G, tally.A_all, prim, union))
    return torch.cat(best).numpy()


def null_pass(run, stats, sources: dict, positions: Sequence[int], known: Optional[tuple] = None) -> dict:
    """{layer: float64 [N, U]} for ``run`` (dissect.engine.Run) after pass 2 (``stats`` summed over
    ranks); ``sources`` {layer: Activations}, ``positions`` this rank's rows in them; ``known``
    (first run position, label parts) made by pass 2 (see :func:`label_runs`)."""
    from broden_builder.progress import progress

    cfg, t0 = run.cfg, time.perf_counter()
    perms = permutations(len(run.rows), cfg.seed, cfg.null)
    workers = run.parallel.tally_workers
    labels = label_runs(run.store, run.rows, run.categories, stats.tally_args, tuple(run.seg_size),
                        cfg.batch_size, workers, known)
    out = {}
    groups = {n: -(-cfg.null // max(1, _COUNT_BUDGET // max(1, stats.shapes[n][0] * (labels.Z.shape[1] + 2 * labels.has.shape[1]) * 8)))
              for n in sources}
    bar = progress(total=len(positions) * sum(groups.values()), desc=f"null ({cfg.null} permutations)", unit="image",
                   quiet=cfg.quiet or run.info.rank != 0, leave=False)
    for n, src in sources.items():
        layer = stats.layers[n]
        out[n] = layer_null(src, positions, run.start, perms, labels, layer.tally, stats.thresholds[n],
                            stats.bases.get(n), cfg.upsample, cfg.union, stats.device, bar)
    bar.close()
    run.timings["null"] = time.perf_counter() - t0
    return out


__all__ = ["null_pass", "layer_null", "label_runs", "label_builder"]
