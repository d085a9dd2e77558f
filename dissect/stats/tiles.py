"""Unit masks of upsampled activations, evaluated only on the tiles that can hold a mask pixel.

A two-tap upsampling (bilinear, nearest, field; see upsample.py) splits the output plane into
tiles, one per (row band, column band), each of which reads one 2 x 2 block of cells. A tile
whose four cells are all below the threshold (less a rounding margin) has no mask pixel; the
other tiles are evaluated with exactly the arithmetic of ``upsample()`` (rows first, then
columns, each as a product then a sum), so the mask is bit for bit that of
``upsample(acts) > T``.
"""
from __future__ import annotations

import functools
from typing import Iterator, Optional, Sequence

import torch

from .upsample import bands, plane_taps, relative_margin


@functools.lru_cache(maxsize=32)
def _axis_plan(taps_key: tuple, axis: int, dtype: torch.dtype) -> tuple:
    """(i0 [n], i1 [n], first output index [n], w0 [n, m], w1 [n, m]) of the bands of one axis (CPU,
    cached): w0, w1 in ``dtype`` are the taps' weights of the band's outputs, NaN past its end, so a
    padded position interpolates to NaN and never passes a threshold."""
    in_size, size, mode, field, input_size = taps_key
    taps = plane_taps(in_size, size, mode, field, input_size)[axis]
    i0, i1, mem = bands(taps)
    valid, mc = mem >= 0, mem.clamp(min=0)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    w0 = torch.where(valid, taps.w0[mc], nan).to(dtype)
    w1 = torch.where(valid, taps.w1[mc], nan).to(dtype)
    return i0, i1, mem[:, 0].clone(), w0, w1


def tile_plan(in_size: Sequence[int], size: Sequence[int], mode: str, field=None, input_size=None,
              dtype: torch.dtype = torch.float32, device="cpu") -> tuple:
    """(rows, cols): each (i0, i1, first, w0, w1) of _axis_plan, on ``device``; cached by shape and mode."""
    key = (tuple(int(x) for x in in_size), tuple(int(x) for x in size), mode,
           None if field is None else tuple(float(x) for x in field),
           None if input_size is None else tuple(int(x) for x in input_size))
    return tuple(tuple(t.to(device) for t in _axis_plan(key, axis, dtype)) for axis in (0, 1))


def hot_maps(acts: torch.Tensor, T: torch.Tensor) -> tuple:
    """(maps [B*U, h, w], hot [P, h, w] bool, sel [P]): the maps with a cell that may set a mask pixel,
    and those cells. An interpolated value v is a convex combination of its tile's corners with
    rounding bounded term by term (relative margin m), so v > T needs a corner c with
    c + |c| m > T, hence c > T - 2 m |T| (m < 1/2); the test uses 3 m |T|, rounded down, for the
    rounding of T's own bound. A unit with T = 0 thus skips the tiles of its exact zeros."""
    B, U, h, w = acts.shape
    maps = acts.reshape(B * U, h, w)
    m = relative_margin(acts.dtype)
    t64 = T.double()
    low = t64 - t64.abs() * (3 * m)
    tl = low.to(acts.dtype)
    tl = torch.where(tl.double() > low, torch.nextafter(tl, torch.full_like(tl, float("-inf"))), tl)
    hot = acts > tl.view(1, U, 1, 1)
    sel = hot.reshape(B * U, -1).any(1).nonzero().squeeze(1)
    return maps, hot.reshape(B * U, h, w)[sel], sel


def hot_tiles(acts: torch.Tensor, T: torch.Tensor, size: Sequence[int], plan: tuple,
              max_join: int) -> Iterator[tuple]:
    """Chunks of evaluated tiles of acts [B, U, h, w] upsampled to size (SH, SW), T [U]:
    (mask [n, my, mx] bool, maps [n] = b * U + u, first [n] = b * SH * SW + y0 * SW + x0, the flat
    pixel of the tile's top-left). Pixel (i, j) of a tile is first + i * SW + j; positions past the
    band's end are False. At most max_join tile pixels per chunk."""
    B, U, h, w = acts.shape
    SH, SW = int(size[0]), int(size[1])
    (by0, by1, ystart, rw0, rw1), (bx0, bx1, xstart, cw0, cw1) = plan
    maps, hs, sel = hot_maps(acts, T)
    if sel.numel() == 0:
        return
    hrow = hs[:, by0, :] | hs[:, by1, :]  # [P, nby, w]
    htile = hrow[:, :, bx0] | hrow[:, :, bx1]  # [P, nby, nbx]
    tp, ty, tx = htile.nonzero(as_tuple=True)
    my, mx = rw0.shape[1], cw0.shape[1]
    cells = maps.reshape(-1)  # the four corners are gathered by flat index (no copy of whole maps)
    y0w, y1w = by0 * w, by1 * w
    step = max(1, max_join // (my * mx))
    for t0 in range(0, tp.numel(), step):
        p_, by, bx = sel[tp[t0: t0 + step]], ty[t0: t0 + step], tx[t0: t0 + step]
        base = p_ * (h * w)
        r0b, r1b = base + y0w[by], base + y1w[by]
        c0, c1 = bx0[bx], bx1[bx]
        w0y, w1y = rw0[by], rw1[by]  # [n, my]
        r0 = cells[r0b + c0].unsqueeze(1) * w0y + cells[r1b + c0].unsqueeze(1) * w1y  # [n, my]: column i0x
        r1 = cells[r0b + c1].unsqueeze(1) * w0y + cells[r1b + c1].unsqueeze(1) * w1y  # column i1x
        rr = r0.unsqueeze(2) * cw0[bx].unsqueeze(1)
        rr += r1.unsqueeze(2) * cw1[bx].unsqueeze(1)
        first = (p_ // U) * (SH * SW) + ystart[by] * SW + xstart[bx]
        yield rr > T[p_ % U].view(-1, 1, 1), p_, first


def mask_entries(acts: torch.Tensor, thresholds: torch.Tensor, size: Sequence[int], mode: str = "bilinear",
                 field: Optional[Sequence[float]] = None, input_size=None, max_join: int = 1 << 24) -> tuple:
    """Mask pixels of acts [B, U, h, w] upsampled to ``size`` (two-tap modes) and thresholded (> T [U]):
    (unit [n], pixel [n] = b * sh * sw + y * sw + x), grouped by tile."""
    B, U = acts.shape[:2]
    SW = int(size[1])
    T = thresholds.detach().to(acts.device, acts.dtype).reshape(U)
    plan = tile_plan(acts.shape[2:], size, mode, field, input_size, acts.dtype, acts.device)
    us, ps = [], []
    for m, p_, first in hot_tiles(acts.detach(), T, size, plan, max_join):
        k, iy, ix = m.nonzero(as_tuple=True)
        us.append(p_[k] % U)
        ps.append(first[k] + iy * SW + ix)
    empty = torch.empty(0, dtype=torch.long, device=acts.device)
    return (torch.cat(us), torch.cat(ps)) if us else (empty, empty)


__all__ = ["tile_plan", "hot_maps", "hot_tiles", "mask_entries"]
