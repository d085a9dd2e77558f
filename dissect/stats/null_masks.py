"""Unit masks as row intervals, for the permutation null.

A unit's mask (upsampled activations > T_k, exactly the Tally's) is stored as maximal horizontal
intervals: (image b, unit u, row y, x0, x1) with x in [x0, x1). The masks of bilinear
upsampling are blobs, so an interval covers tens of pixels and the null's per-permutation work
(dissect.stats.null) scales with the intervals, not the pixels.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from .tiles import hot_tiles, tile_plan
from .upsample import SEPARABLE, upsample

# bound on the mask cells evaluated at once (as the Tally's)
_MAX_JOIN = 1 << 24


class MaskIntervals(NamedTuple):
    """Intervals of B images' masks, U units, each [M] long, sorted by (b, u, y, x0); plus
    mcount [B, U], the mask size of each (image, unit)."""

    b: torch.Tensor
    u: torch.Tensor
    y: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
    mcount: torch.Tensor

    @property
    def pixels(self) -> int:
        return int(self.mcount.sum())


def _row_runs(m: torch.Tensor) -> tuple:
    """(k, row, x0, x1) of each maximal run of True in the rows of m [n, rows, cols] (row-major order)."""
    left = torch.zeros_like(m)
    left[:, :, 1:] = m[:, :, :-1]
    right = torch.zeros_like(m)
    right[:, :, :-1] = m[:, :, 1:]
    k, r, x0 = (m & ~left).nonzero(as_tuple=True)
    x1 = (m & ~right).nonzero(as_tuple=True)[2] + 1  # each run has one start and one end, in the same order
    return k, r, x0, x1


def _pieces(acts: torch.Tensor, T: torch.Tensor, size: Sequence[int], mode: str, field, input_size) -> tuple:
    """(bu [M], first flat pixel [M] = b * S + y * sw + x0, length [M]) of mask row pieces of acts
    [B, U, h, w] (two-tap modes: within the evaluated sub-tiles; else whole upsampled rows)."""
    B, U = acts.shape[:2]
    SH, SW = int(size[0]), int(size[1])
    bus, firsts, lens = [], [], []
    if mode in SEPARABLE and acts.is_floating_point():
        plan = tile_plan(acts.shape[2:], (SH, SW), mode, field, input_size, acts.dtype, acts.device)
        for m, maps, first, _ in hot_tiles(acts, T.to(acts.dtype), (SH, SW), plan, _MAX_JOIN):
            k, r, x0, x1 = _row_runs(m)
            bus.append(maps.index_select(0, k))
            firsts.append(first.index_select(0, k) + r * SW + x0)
            lens.append(x1 - x0)
    else:  # bicubic or integer activations: the Tally's add() path (whole planes)
        step = max(1, _MAX_JOIN // max(1, U * SH * SW))
        for b0 in range(0, B, step):
            up = upsample(acts[b0 : b0 + step], (SH, SW), mode, field=field, input_size=input_size)
            m = (up > T.to(up.dtype).view(1, U, 1, 1)).reshape(-1, SH, SW)
            k, r, x0, x1 = _row_runs(m)
            bus.append(k + b0 * U)
            firsts.append((k // U + b0) * (SH * SW) + r * SW + x0)
            lens.append(x1 - x0)
    empty = torch.empty(0, dtype=torch.long, device=acts.device)
    return tuple(torch.cat(x) if x else empty for x in (bus, firsts, lens))


def mask_intervals(
    acts: torch.Tensor,
    thresholds: torch.Tensor,
    size: Sequence[int],
    mode: str = "bilinear",
    field: Optional[Sequence[float]] = None,
    input_size=None,
) -> MaskIntervals:
    """The masks of acts [B, U, h, w] upsampled to ``size`` (sh, sw) by ``mode`` and thresholded
    (> thresholds [U], compared in acts' dtype as Tally.add_activations does) as MaskIntervals;
    pieces cut at sub-tile borders are joined. Raises ValueError for acts that are not 4-D."""
    if acts.dim() != 4:
        raise ValueError(f"activations must be [B, U, h, w], got shape {tuple(acts.shape)}")
    B, U = acts.shape[:2]
    SH, SW = int(size[0]), int(size[1])
    S = SH * SW
    T = thresholds.detach().to(acts.device).reshape(U)
    bu, first, length = _pieces(acts.detach(), T, (SH, SW), mode, field, input_size)
    key, order = torch.sort((bu // U) * (U * S) + (bu % U) * S + first % S)  # (b, u, pixel)
    length = length.index_select(0, order)
    joins = torch.zeros_like(key, dtype=torch.bool)
    if key.numel() > 1:  # a piece continues its predecessor: same (b, u, row), adjacent
        joins[1:] = (key[1:] == key[:-1] + length[:-1]) & (key[1:] % SW != 0)
    head = (~joins).nonzero().squeeze(1)
    total = torch.zeros(head.numel(), dtype=torch.long, device=key.device).index_add_(
        0, torch.cumsum(~joins, 0) - 1, length
    )
    k = key.index_select(0, head)
    b, rest = k // (U * S), k % (U * S)
    u, p = rest // S, rest % S
    y, x0 = p // SW, p % SW
    mcount = torch.zeros(B * U, dtype=torch.long, device=key.device).index_add_(0, b * U + u, total).view(B, U)
    return MaskIntervals(b, u, y, x0, x0 + total, mcount)


__all__ = ["MaskIntervals", "mask_intervals"]
