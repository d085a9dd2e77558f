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
into per-pixel combination ids (dissect.stats.null_labels), made once per layer into keys U x
combination (:func:`pixel_keys`); the masks of a chunk of images are thresholded once into row
intervals (dissect.stats.null_masks) and expanded once into mask pixels (flat label pixel, unit).
Each permutation is then a few passes over those pixels: the partner images' key planes are
gathered whole and offset by each image's first chunk-local combination, each mask pixel reads its
key there and adds its unit, and one index_add counts the pixels per (combination, unit) in dense
int32 bins; each non-empty (combination, unit) count is then spread over the combination's label
columns. int32 throughout where the values fit (they are bounded by the chunk's pixels).
Memory: the label table (see null_labels) and its keys (4 bytes per label pixel), the mask pixels
of one chunk (8 bytes each, at most _MAX_PIXELS at once), and the counts N x U x (L + 2 C) int64
(N permutations, U units, L labels, C categories).
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
# mask pixels expanded at once (8 bytes each, held while every permutation counts them)
_MAX_PIXELS = 1 << 24


def permutation(n: int, seed: int, k: int) -> np.ndarray:
    """int64 [n]: permutation ``k`` of ``n`` image positions for ``seed`` (numpy's default_rng
    seeded with [seed, k]); the masks of position i meet the labels of position perm[i]."""
    return np.random.default_rng([int(seed), int(k)]).permutation(int(n)).astype(np.int64)


def permutations(n: int, seed: int, count: int, start: int = 0) -> torch.Tensor:
    """long [count, n]: permutations start .. start + count - 1 (see :func:`permutation`); each is
    made from (seed, k) alone, so any range can be made where it is needed."""
    return (
        torch.from_numpy(np.stack([permutation(n, seed, k) for k in range(start, start + count)]))
        if count
        else torch.empty(0, n, dtype=torch.long)
    )


def pixel_keys(labels: LabelRuns, units: int) -> torch.Tensor:
    """[n, S] int32 (int64 where U x combinations might not fit in int32): U x the combination of
    every label pixel of ``labels`` (n images of S pixels), numbered within its image."""
    n, S = labels.images, labels.size[0] * labels.size[1]
    most = int((labels.combo_offset[1:] - labels.combo_offset[:-1]).max()) if n else 0
    dt = torch.int32 if (most + 1) * int(units) * max(1, n) < 2**31 else torch.long
    return labels.combo_id.view(n, S).to(dt).mul_(int(units))


class NullTally:
    """Integer counts of N permuted pairings: I [N, U, L], A_original [N, U, C], A_lite [N, U, C]
    (int64). G and A_all are those of the observed Tally (a permutation moves no label and no mask).

    ``perms``: long [N, n] (:func:`permutations`); ``labels``: the LabelRuns of all n positions;
    ``keys``: :func:`pixel_keys` of them for U units, when already made (shared by processes);
    ``areas``: the union rules ('original', 'lite') whose unit areas to count: a run needs only
    its own (the 'lite' area costs about a fifth of each permutation's count).
    Add chunks of this shard's masks with :meth:`add`; sum over ranks with ``sum_keys``.
    """

    reduction = "sum"
    sum_keys = ("I", "A_original", "A_lite")

    def __init__(
        self,
        perms: torch.Tensor,
        labels: LabelRuns,
        units: int,
        n_labels: int,
        categories: int,
        keys: Optional[torch.Tensor] = None,
        areas: Sequence[str] = ("original", "lite"),
    ):
        self.perms, self.labels = perms.long().cpu(), labels
        self.N, self.U, self.L, self.C = perms.shape[0], int(units), int(n_labels), int(categories)
        z = lambda *s: torch.zeros(s, dtype=torch.long)
        self.I, self.A_original, self.A_lite = (
            z(self.N, self.U, self.L),
            z(self.N, self.U, self.C),
            z(self.N, self.U, self.C),
        )
        self.device = torch.device("cpu")
        self._keys = keys  # pixel_keys(labels, units), made when first needed
        self.areas = tuple(areas)  # the union rules whose unit areas are counted (the others stay 0)
        self._buffers: dict = {}

    def add(self, masks: MaskIntervals, positions: Sequence[int]) -> None:
        """Count a chunk: ``masks`` of B images whose run positions are ``positions`` [B], against
        the labels of perm[k][positions] for every permutation k. The chunk is expanded to mask
        pixels once (at most _MAX_PIXELS at a time, whole images) and reused by every permutation."""
        masks = MaskIntervals(*(t.cpu() for t in masks))
        pos = torch.as_tensor(list(positions), dtype=torch.long)
        if masks.mcount.shape != (pos.numel(), self.U):
            raise ValueError(
                f"masks of {tuple(masks.mcount.shape)} (images, units) for {pos.numel()} positions and {self.U} units"
            )
        for lo, hi, pix, u in _mask_pixels(masks, self.labels.size, _MAX_PIXELS):
            mc, j = masks.mcount[lo:hi], self.perms.index_select(1, pos[lo:hi])
            for k in range(self.N):
                self._add_one(k, mc, pix, u, j[k])

    def _buffer(self, name: str, size: int, dtype: torch.dtype) -> torch.Tensor:
        """A reused scratch tensor of ``size`` elements (fresh large tensors cost page faults on
        every permutation); contents undefined."""
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype:
            buf = self._buffers[name] = torch.empty(size, dtype=dtype)
        return buf[:size]

    def _pixel_keys(self) -> torch.Tensor:
        """[n, S] int32 (int64 where it might not fit): U x each label pixel's combination within
        its image (:func:`pixel_keys`; made once, or given)."""
        if self._keys is None:
            self._keys = pixel_keys(self.labels, self.U)
        return self._keys

    def _add_one(self, k: int, mc: torch.Tensor, pix: torch.Tensor, u: torch.Tensor, j: torch.Tensor) -> None:
        """Permutation k: the B chunk images (mask sizes mc [B, U], mask pixels ``pix`` [P] flat over
        the chunk's B x S label pixels, their units ``u`` [P]) meet the labels of positions j [B]."""
        lab, U, L, C = self.labels, self.U, self.L, self.C
        ncomb = lab.combo_offset.index_select(0, j + 1) - lab.combo_offset.index_select(0, j)
        cfirst = torch.cumsum(ncomb, 0) - ncomb  # chunk-local index of each image's first combination
        bins = int(ncomb.sum()) * U
        keys = self._pixel_keys()
        # (chunk-local combination, unit) key of each mask pixel, through its partner's label pixel
        B, S = j.numel(), keys.shape[1]
        lcu = torch.index_select(keys, 0, j, out=self._buffer("lcu", B * S, keys.dtype).view(B, S))
        lcu.add_((cfirst * U).to(keys.dtype).view(-1, 1))
        key = torch.index_select(lcu.view(-1), 0, pix, out=self._buffer("key", pix.numel(), keys.dtype)).add_(u)
        if bins <= _MAX_BINS:  # int32 counts: each is at most one image's pixels
            cnt = self._buffer("cnt", bins, torch.int32).zero_()
            cnt.index_add_(0, key, torch.ones(1, dtype=torch.int32).expand(key.numel()))
            key = cnt.nonzero().squeeze(1)
            w = cnt.index_select(0, key).long()
        else:
            key, w = torch.unique(key.long(), return_counts=True)
        key = key.long()
        cl, u = key // U, key % U
        b = torch.repeat_interleave(torch.arange(j.numel()), ncomb).index_select(0, cl)  # chunk image of each
        g = lab.combo_offset.index_select(0, j).index_select(0, b) + cl - cfirst.index_select(0, b)
        cols = lab.cols.index_select(0, g)
        cats = lab.cats.index_select(0, g) if "lite" in self.areas else None
        K = cols.shape[1]
        I = (
            torch.zeros(U * (L + 1), dtype=torch.long)
            .index_add_(0, ((u * (L + 1)).unsqueeze(1) + cols).reshape(-1), w.repeat_interleave(K))
            .view(U, L + 1)[:, :L]
        )
        if "lite" in self.areas:
            inside = torch.zeros(B * U * (C + 1), dtype=torch.bool)  # the unit's mask meets category c there
            inside[(((b * U + u) * (C + 1)).unsqueeze(1) + cats).reshape(-1)] = True
            inside = inside.view(B, U, C + 1)[:, :, :C] | lab.has_img.index_select(0, j).unsqueeze(1)
            self.A_lite[k] += (mc.unsqueeze(2) * inside).sum(0)
        if "original" in self.areas:  # sum over images of mc [B, U] x has [B, C]: exact in float64 (below 2^53)
            self.A_original[k] += torch.mm(mc.t().double(), lab.has.index_select(0, j).double()).long()
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
        if union in ("original", "lite") and union not in self.areas:
            raise ValueError(f"the '{union}' union's unit areas were not counted (areas {self.areas})")
        prim, G = primary.cpu(), G.cpu()
        for k in range(self.N):
            A = {"original": self.A_original[k], "lite": self.A_lite[k]}.get(union)
            A = A_all.cpu().view(-1, 1).expand(-1, self.L) if A is None else A[:, prim]
            iou = iou_from_counts(self.I[k], A, G)
            out[k] = torch.where(allowed.view(1, -1), iou, torch.full_like(iou, -1.0)).amax(1)
        return out


def _mask_pixels(m: MaskIntervals, size: Sequence[int], most: int):
    """Yield (lo, hi, pix [P], u [P]) for runs of whole images lo .. hi - 1 of ``m`` holding at most
    ``most`` mask pixels (or one image): each mask pixel as its flat index over the hi - lo images'
    label pixels, (b - lo) * S + y * sw + x, and its unit (int32 where the index fits, else int64)."""
    SH, SW = int(size[0]), int(size[1])
    S = SH * SW
    B = m.mcount.shape[0]
    per_image = torch.cumsum(m.mcount.sum(1), 0)
    first = torch.searchsorted(m.b, torch.arange(B + 1))  # intervals of image b: first[b] .. first[b + 1]
    lo = 0
    while lo < B:
        done = int(per_image[lo - 1]) if lo else 0
        hi = max(lo + 1, int(torch.searchsorted(per_image, done + most, right=True)))
        dt = torch.int32 if (hi - lo) * S < 2**31 else torch.long
        i0, i1 = int(first[lo]), int(first[hi])
        length = (m.x1[i0:i1] - m.x0[i0:i1]).to(dt)
        start = ((m.b[i0:i1] - lo) * S + m.y[i0:i1] * SW + m.x0[i0:i1]).to(dt)
        P = int(length.sum())
        rep = torch.repeat_interleave(torch.arange(i1 - i0), length.long(), output_size=P)
        step = torch.arange(P, dtype=dt) - (torch.cumsum(length, 0, dtype=dt) - length).index_select(0, rep)
        yield lo, hi, start.index_select(0, rep).add_(step), m.u[i0:i1].to(torch.int32).index_select(0, rep)
        lo = hi


__all__ = ["permutation", "permutations", "pixel_keys", "NullTally"]
