"""The permutation null of a layer's best IoUs.

Under the null, a unit's masks are unrelated to *which* image's labels they meet. Each image's
masks and each image's labels stay exactly as they are; only the pairing of images is permuted:
for permutation pi, the masks of image i are counted against the labels of image pi(i), with
the same thresholds T_k, union rule and categories as the observed tally (Bau et al. 2017, sec.
2; the union rule is NetDissect-Lite's per-category unit area: a unit's area counts only in the
images whose labels carry the label's category). Each unit's null statistic is its best IoU over
labels, so the search over labels is part of the null.

Exact and deterministic: permutation k of the run's n images is
``numpy.random.default_rng([seed, k]).permutation(n)`` over the positions of the run's images
(index.csv order, or the split's), whatever the batch size, workers, ranks or resumes; the
counts are integers summed over batches and ranks.

Speed (why this is not the Tally called N times): the labels of every image are decoded once
into row runs (dissect.stats.null_labels), the masks of a chunk of images are thresholded once
into row intervals (dissect.stats.null_masks), and each permutation is one vectorised count:
every mask interval is looked up in the runs of its row in image pi(i) (two gathers), split at
the run borders, and the overlaps are summed per (combination, unit) with one bincount; each
(combination, unit) sum is then spread over the combination's label columns.
Memory: the label table (see null_labels), the intervals of one chunk, and the counts
N x U x (L + 2 C) int64 (N permutations, U units, L labels, C categories).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .null_labels import LabelRuns
from .null_masks import MaskIntervals
from .tally import iou_from_counts

# bins of the per-permutation (combination, unit) count above which torch.unique replaces bincount
_MAX_BINS = 1 << 24


def permutation(n: int, seed: int, k: int) -> np.ndarray:
    """int64 [n]: permutation ``k`` of ``n`` image positions for ``seed`` (numpy's default_rng
    seeded with [seed, k]); the masks of position i meet the labels of position perm[i]."""
    return np.random.default_rng([int(seed), int(k)]).permutation(int(n)).astype(np.int64)


def permutations(n: int, seed: int, count: int) -> torch.Tensor:
    """long [count, n]: permutations 0 .. count - 1 (see :func:`permutation`)."""
    return (
        torch.from_numpy(np.stack([permutation(n, seed, k) for k in range(count)]))
        if count
        else torch.empty(0, n, dtype=torch.long)
    )


class NullTally:
    """Integer counts of N permuted pairings: I [N, U, L], A_original [N, U, C], A_lite [N, U, C]
    (int64). G and A_all are those of the observed Tally (a permutation moves no label and no mask).

    ``perms``: long [N, n] (:func:`permutations`); ``labels``: the LabelRuns of all n positions.
    Add chunks of this shard's masks with :meth:`add`; sum over ranks with ``sum_keys``.
    """

    reduction = "sum"
    sum_keys = ("I", "A_original", "A_lite")

    def __init__(self, perms: torch.Tensor, labels: LabelRuns, units: int, n_labels: int, categories: int):
        self.perms, self.labels = perms.long().cpu(), labels
        self.N, self.U, self.L, self.C = perms.shape[0], int(units), int(n_labels), int(categories)
        z = lambda *s: torch.zeros(s, dtype=torch.long)
        self.I, self.A_original, self.A_lite = (
            z(self.N, self.U, self.L),
            z(self.N, self.U, self.C),
            z(self.N, self.U, self.C),
        )
        self.device = torch.device("cpu")

    def add(self, masks: MaskIntervals, positions: Sequence[int]) -> None:
        """Count a chunk: ``masks`` of B images whose run positions are ``positions`` [B], against
        the labels of perm[k][positions] for every permutation k."""
        masks = MaskIntervals(*(t.cpu() for t in masks))
        pos = torch.as_tensor(list(positions), dtype=torch.long)
        if masks.mcount.shape != (pos.numel(), self.U):
            raise ValueError(
                f"masks of {tuple(masks.mcount.shape)} (images, units) for {pos.numel()} positions and {self.U} units"
            )
        for k in range(self.N):
            self._add_one(k, masks, self.perms[k].index_select(0, pos))

    def _add_one(self, k: int, m: MaskIntervals, j: torch.Tensor) -> None:
        """Permutation k: the B chunk images meet the labels of positions j [B]."""
        lab, U, L, C = self.labels, self.U, self.L, self.C
        SH, SW = lab.size
        ncomb = lab.combo_offset.index_select(0, j + 1) - lab.combo_offset.index_select(0, j)
        cfirst = torch.cumsum(ncomb, 0) - ncomb  # chunk-local index of each image's first combination
        w, cl, u = _overlaps(lab, m, j, cfirst)
        key = cl * U + u
        bins = int(ncomb.sum()) * U
        if bins <= _MAX_BINS:
            cnt = torch.zeros(bins, dtype=torch.long).index_add_(0, key, w)
            key = cnt.nonzero().squeeze(1)
            w = cnt.index_select(0, key)
        else:
            key, inv = torch.unique(key, return_inverse=True)
            w = torch.zeros(key.numel(), dtype=torch.long).index_add_(0, inv, w)
        cl, u = key // U, key % U
        b = torch.repeat_interleave(torch.arange(j.numel()), ncomb).index_select(0, cl)  # chunk image of each
        g = lab.combo_offset.index_select(0, j).index_select(0, b) + cl - cfirst.index_select(0, b)
        cols, cats = lab.cols.index_select(0, g), lab.cats.index_select(0, g)
        K = cols.shape[1]
        I = (
            torch.zeros(U * (L + 1), dtype=torch.long)
            .index_add_(0, ((u * (L + 1)).unsqueeze(1) + cols).reshape(-1), w.repeat_interleave(K))
            .view(U, L + 1)[:, :L]
        )
        B = j.numel()
        inside = torch.zeros(B * U * (C + 1), dtype=torch.bool)
        inside[(((b * U + u) * (C + 1)).unsqueeze(1) + cats).reshape(-1)] = True
        mc = m.mcount
        has_img = lab.has_img.index_select(0, j)
        inside = inside.view(B, U, C + 1)[:, :, :C] | has_img.unsqueeze(1)
        self.A_lite[k] += (mc.unsqueeze(2) * inside).sum(0)
        self.A_original[k] += (mc.unsqueeze(2) * lab.has.index_select(0, j).unsqueeze(1)).sum(0)
        zb, zl = lab.Z.index_select(0, j).nonzero(as_tuple=True)  # image-level labels: the whole mask meets them
        I.index_add_(1, zl, mc.index_select(0, zb).t().contiguous())
        self.I[k] += I

    def best_iou(
        self,
        G: torch.Tensor,
        A_all: torch.Tensor,
        primary: torch.Tensor,
        union: str,
        allowed: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """float64 [N, U]: each permutation's best IoU per unit over the ``allowed`` label columns
        (bool [L], default all), by the observed Tally's formula (dissect.stats.tally.iou_from_counts);
        G [L] and A_all [U] the observed counts, primary [L] the category index of each column."""
        allowed = torch.ones(self.L, dtype=torch.bool) if allowed is None else allowed.cpu()
        out = torch.zeros(self.N, self.U, dtype=torch.float64)
        if not bool(allowed.any()):
            return out
        prim, G = primary.cpu(), G.cpu()
        for k in range(self.N):
            A = {"original": self.A_original[k], "lite": self.A_lite[k]}.get(union)
            A = A_all.cpu().view(-1, 1).expand(-1, self.L) if A is None else A[:, prim]
            iou = iou_from_counts(self.I[k], A, G)
            out[k] = torch.where(allowed.view(1, -1), iou, torch.full_like(iou, -1.0)).amax(1)
        return out


def _overlaps(lab: LabelRuns, m: MaskIntervals, j: torch.Tensor, cfirst: torch.Tensor) -> tuple:
    """(w, cl, u) [T]: pixels w that each mask interval of ``m`` shares with each label run of its
    row in image j[b]; cl the chunk-local combination index (cfirst[b] + combination within j[b]).
    Most intervals lie inside one run (computed for all at once); those crossing run borders are
    cut to their first run and get one more entry per further run."""
    SH, SW = lab.size
    S = SH * SW
    per_image = torch.stack([j * S, lab.run_offset.index_select(0, j), cfirst - lab.combo_offset.index_select(0, j)], 1)
    base, roff, coff = per_image.index_select(0, m.b).unbind(1)
    p0 = base + m.y * SW + m.x0  # flat first and last pixel of each interval in the label image
    p1 = p0 + (m.x1 - m.x0 - 1)
    k0 = roff + lab.run_id.index_select(0, p0).long()
    k1 = roff + lab.run_id.index_select(0, p1).long()
    w, cl, u = m.x1 - m.x0, lab.run_combo.index_select(0, k0) + coff, m.u
    multi = (k1 != k0).nonzero().squeeze(1)
    if multi.numel() == 0:
        return w, cl, u
    k0m, q0, q1 = k0.index_select(0, multi), p0.index_select(0, multi), p1.index_select(0, multi) + 1
    w = w.index_copy(0, multi, lab.run_start.index_select(0, k0m + 1) - q0)
    n = k1.index_select(0, multi) - k0m  # further runs met
    rep = torch.repeat_interleave(torch.arange(multi.numel()), n)
    k = k0m.index_select(0, rep) + 1 + (torch.arange(rep.numel()) - (torch.cumsum(n, 0) - n).index_select(0, rep))
    wx = torch.minimum(q1.index_select(0, rep), lab.run_start.index_select(0, k + 1)) - lab.run_start.index_select(0, k)
    mi = multi.index_select(0, rep)
    clx = lab.run_combo.index_select(0, k) + coff.index_select(0, mi)
    return torch.cat([w, wx]), torch.cat([cl, clx]), torch.cat([u, u.index_select(0, mi)])


__all__ = ["permutation", "permutations", "NullTally"]
