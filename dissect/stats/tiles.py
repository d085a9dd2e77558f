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


# side of the sub-tiles a tile is split into once its cells may pass T (see hot_tiles); tiles of at
# most _DIRECT pixels are evaluated whole
SUB = 8
_DIRECT = 16


@functools.lru_cache(maxsize=32)
def _axis_plan(taps_key: tuple, axis: int, dtype: torch.dtype, sub: int) -> tuple:
    """(i0 [n], i1 [n], first output index [n], w0 [n, m], w1 [n, m], corners [n, 2 g]) of the bands
    of one axis (CPU, cached). w0, w1 in ``dtype`` are the taps' weights of the band's outputs, NaN
    past its end (m a multiple of ``sub``), so a padded position interpolates to NaN and never
    passes a threshold. corners: the first and last output of each group of ``sub`` outputs
    (g = m / sub groups; an empty group points at a NaN position)."""
    in_size, size, mode, field, input_size = taps_key
    taps = plane_taps(in_size, size, mode, field, input_size)[axis]
    i0, i1, mem = bands(taps)
    sub = min(sub, mem.shape[1])
    g = -(-mem.shape[1] // sub)
    mem = torch.cat([mem, mem.new_full((mem.shape[0], g * sub - mem.shape[1]), -1)], 1)
    valid, mc = mem >= 0, mem.clamp(min=0)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    w0 = torch.where(valid, taps.w0[mc], nan).to(dtype)
    w1 = torch.where(valid, taps.w1[mc], nan).to(dtype)
    lo = torch.arange(g) * sub
    last = (valid.sum(1, keepdim=True) - 1).clamp(min=0)  # last valid output of the band
    hi = torch.where(lo < last + 1, torch.minimum(lo + sub - 1, last), lo)
    corners = torch.stack([lo.expand_as(hi), hi], 2).reshape(-1, 2 * g)
    return i0, i1, mem[:, 0].clone(), w0, w1, corners


def tile_plan(
    in_size: Sequence[int],
    size: Sequence[int],
    mode: str,
    field=None,
    input_size=None,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    sub: int = SUB,
) -> tuple:
    """(rows, cols): each (i0, i1, first, w0, w1, corners) of _axis_plan, on ``device``; cached by
    shape, mode, dtype and sub-tile side."""
    key = (
        tuple(int(x) for x in in_size),
        tuple(int(x) for x in size),
        mode,
        None if field is None else tuple(float(x) for x in field),
        None if input_size is None else tuple(int(x) for x in input_size),
    )
    return tuple(tuple(t.to(device) for t in _axis_plan(key, axis, dtype, sub)) for axis in (0, 1))


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
    sel = hot.reshape(B * U, -1).view(torch.uint8).amax(1).nonzero().squeeze(1)  # any(), faster
    return maps, hot.reshape(B * U, h, w).index_select(0, sel), sel


def _outer(r0: torch.Tensor, r1: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
    """[n, a, b] = r0 (x) c0 + r1 (x) c1, each product rounded then summed, as upsample() does."""
    v = r0.unsqueeze(2) * c0.unsqueeze(1)
    v += r1.unsqueeze(2) * c1.unsqueeze(1)
    return v


def _sub_tiles(r0, r1, cw0, cw1, cy, cx, M, Tn, margin: float) -> tuple:
    """(k, gy, gx) of the sub-tiles that may hold a mask pixel: r0, r1 [n, my] the tiles' rows
    interpolated at their two cell columns, cw0, cw1 [n, mx] column weights, cy [n, 2 gy] / cx
    [n, 2 gx] sub-tile corner rows / columns, M [n] the largest |cell| of each tile, Tn [n].
    Within a band the interpolation weight is monotone in the output index, so the bilinear
    value over a sub-tile peaks at one of its four corner pixels; the computed values differ from
    the exact ones by at most ~6 eps M, so a pixel can pass only if a corner exceeds T - 12 eps M
    (tested with 4 * margin = 64 eps). A tile with a non-finite cell keeps every sub-tile."""
    n, gy, gx = r0.shape[0], cy.shape[1] // 2, cx.shape[1] // 2
    v = _outer(r0.gather(1, cy), r1.gather(1, cy), cw0.gather(1, cx), cw1.gather(1, cx))
    vmax = v.view(n, gy, 2, gx, 2).amax((2, 4))  # NaN (never kept) for a group past the band's end
    keep = (vmax + (4 * margin) * M.view(n, 1, 1)) > Tn.view(n, 1, 1)
    keep |= ~torch.isfinite(M).view(n, 1, 1)
    return keep.nonzero(as_tuple=True)


def hot_tiles(acts: torch.Tensor, T: torch.Tensor, size: Sequence[int], plan: tuple, max_join: int) -> Iterator[tuple]:
    """Chunks of evaluated sub-tiles of acts [B, U, h, w] upsampled to size (SH, SW), T [U]:
    (mask [n, sy, sx] bool, maps [n] = b * U + u, first [n] = b * SH * SW + y0 * SW + x0, the flat
    pixel of the sub-tile's top-left, tiles: the tiles of the chunk whose cells may pass T).
    Pixel (i, j) of a sub-tile is first + i * SW + j; positions past the band's end are False."""
    B, U, h, w = acts.shape
    SH, SW = int(size[0]), int(size[1])
    (by0, by1, ystart, rw0, rw1, ycor), (bx0, bx1, xstart, cw0, cw1, xcor) = plan
    if acts.numel() == 0:
        return
    maps, hs, sel = hot_maps(acts, T)
    if sel.numel() == 0:
        return
    hrow = hs.index_select(1, by0) | hs.index_select(1, by1)  # [P, nby, w]
    tp, ty, tx = (hrow.index_select(2, bx0) | hrow.index_select(2, bx1)).nonzero(as_tuple=True)  # [P, nby, nbx]
    my, mx = rw0.shape[1], cw0.shape[1]
    sy, sx = my // (ycor.shape[1] // 2), mx // (xcor.shape[1] // 2)  # sub-tile sides (m = groups * side)
    cells, margin = maps.reshape(-1), relative_margin(acts.dtype)
    y0w, y1w = by0 * w, by1 * w
    step = max(1, max_join // (my * mx))
    for t0 in range(0, tp.numel(), step):
        p_, by, bx = sel[tp[t0 : t0 + step]], ty[t0 : t0 + step], tx[t0 : t0 + step]
        sel_y, sel_x = (lambda t: t.index_select(0, by)), (lambda t: t.index_select(0, bx))
        base = p_ * (h * w)
        r0b, r1b = base + sel_y(y0w), base + sel_y(y1w)
        i0x, i1x = sel_x(bx0), sel_x(bx1)
        c00, c10 = cells.index_select(0, r0b + i0x), cells.index_select(0, r1b + i0x)  # the four corners
        c01, c11 = cells.index_select(0, r0b + i1x), cells.index_select(0, r1b + i1x)
        w0y, w1y = sel_y(rw0), sel_y(rw1)  # [n, my]
        r0 = c00.unsqueeze(1) * w0y + c10.unsqueeze(1) * w1y  # [n, my]: column i0x
        r1 = c01.unsqueeze(1) * w0y + c11.unsqueeze(1) * w1y  # column i1x
        w0x, w1x, Tn = sel_x(cw0), sel_x(cw1), T.index_select(0, p_ % U)
        M = torch.stack([c00, c10, c01, c11]).abs().amax(0)
        if my * mx > _DIRECT:
            k, gy, gx = _sub_tiles(r0, r1, w0x, w1x, sel_y(ycor), sel_x(xcor), M, Tn, margin)
        else:  # small tiles: evaluated whole
            k = torch.arange(r0.shape[0], device=r0.device)
            gy = gx = torch.zeros_like(k)
        ry, rx = k * (my // sy) + gy, k * (mx // sx) + gx  # rows of the [n * groups, side] views
        v = _outer(
            r0.reshape(-1, sy).index_select(0, ry),
            r1.reshape(-1, sy).index_select(0, ry),
            w0x.reshape(-1, sx).index_select(0, rx),
            w1x.reshape(-1, sx).index_select(0, rx),
        )
        first = (p_ // U) * (SH * SW) + sel_y(ystart) * SW + sel_x(xstart)
        yield (
            v > Tn.index_select(0, k).view(-1, 1, 1),
            p_.index_select(0, k),
            first.index_select(0, k) + gy * (sy * SW) + gx * sx,
            r0.shape[0],
        )


def mask_entries(
    acts: torch.Tensor,
    thresholds: torch.Tensor,
    size: Sequence[int],
    mode: str = "bilinear",
    field: Optional[Sequence[float]] = None,
    input_size=None,
    max_join: int = 1 << 24,
) -> tuple:
    """Mask pixels of acts [B, U, h, w] upsampled to ``size`` (two-tap modes) and thresholded (> T [U]):
    (unit [n], pixel [n] = b * sh * sw + y * sw + x), grouped by tile."""
    B, U = acts.shape[:2]
    SW = int(size[1])
    T = thresholds.detach().to(acts.device, acts.dtype).reshape(U)
    plan = tile_plan(acts.shape[2:], size, mode, field, input_size, acts.dtype, acts.device)
    us, ps = [], []
    for m, p_, first, _ in hot_tiles(acts.detach(), T, size, plan, max_join):
        k, iy, ix = m.nonzero(as_tuple=True)
        us.append(p_[k] % U)
        ps.append(first[k] + iy * SW + ix)
    empty = torch.empty(0, dtype=torch.long, device=acts.device)
    return (torch.cat(us), torch.cat(ps)) if us else (empty, empty)


__all__ = ["tile_plan", "hot_maps", "hot_tiles", "mask_entries"]
