"""Unit masks drawn over images: exactly the masks the tally counted.

A unit's mask is ``upsample(map, segmentation size, recorded mode) > T_k`` with the tally's own
upsampler (dissect.stats.upsample), then enlarged to the image with the same upsampler in
'nearest' mode (pixel replication for the usual 2x), so every drawn mask pixel is a counted one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..stats.upsample import axis_taps, bands, interp_rows, plane_taps, relative_margin, upsample

#: Outline colour of the mask boundary (RGB).
OUTLINE = np.array([255, 230, 0], np.float32)


def upsample_map(act_map: np.ndarray, height: int, width: int, mode: str = "bilinear") -> np.ndarray:
    """An h x w map upsampled to height x width by the tally's upsampler (bilinear: align_corners=False)."""
    t = torch.as_tensor(np.asarray(act_map, dtype=np.float32))[None, None]
    return upsample(t, (int(height), int(width)), mode)[0, 0].numpy()


def unit_mask(act_map: np.ndarray, threshold: float, height: int, width: int, mode: str = "bilinear") -> np.ndarray:
    """Boolean height x width mask: upsampled activation > threshold (the rule and arithmetic of the tally)."""
    return upsample_map(act_map, height, width, mode) > np.float32(threshold)


def enlarge_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A boolean mask brought to height x width by nearest-neighbour (the tally's upsampler, 'nearest')."""
    if mask.shape == (height, width):
        return mask
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return upsample(t, (int(height), int(width)), "nearest")[0, 0].numpy() > 0.5


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask (``[..., h, w]``) with a 4-neighbour outside it (or on the image border)."""
    inner = np.zeros_like(mask)  # border pixels have a neighbour outside the image: never inner
    m = mask
    inner[..., 1:-1, 1:-1] = m[..., :-2, 1:-1] & m[..., 2:, 1:-1] & m[..., 1:-1, :-2] & m[..., 1:-1, 2:]
    return mask & ~inner


@lru_cache(maxsize=8)
def dim_table(dim: float) -> np.ndarray:
    """uint8 [256]: the dimmed value of each channel value, rounded as before the table existed:
    float32 ``v * dim + 128 * (1 - dim) / 2``, then ``+ 0.5``, clipped and truncated."""
    v = np.arange(256, dtype=np.float32)
    return np.clip(v * dim + 128.0 * (1 - dim) * 0.5 + 0.5, 0, 255).astype(np.uint8)


def overlay(rgb: np.ndarray, mask: np.ndarray, dim: float = 0.3, dimmed: Optional[np.ndarray] = None) -> np.ndarray:
    """The image with everything outside ``mask`` dimmed towards grey and the mask's outline drawn.

    ``rgb`` [..., h, w, 3] (RGB) or [..., h, w, 4] (RGBX: the 4th byte is padding) uint8 and ``mask``
    [..., h, w] bool: a stack of images is drawn in one call. ``dimmed``: ``dim_table(dim)[rgb]``
    when the caller has it (the report dims each thumbnail once, not once per unit). Integer work
    only; RGBX pixels are selected as whole 32-bit words (numpy's broadcast select of 3-byte pixels
    measured 4x slower). Returns the same layout as ``rgb``."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if dimmed is None:
        dimmed = dim_table(float(dim))[rgb]
    edge = _boundary(mask)
    if rgb.shape[-1] == 4:
        words = np.where(mask, rgb.view(np.uint32)[..., 0], np.ascontiguousarray(dimmed).view(np.uint32)[..., 0])
        words[edge] = np.append(OUTLINE.astype(np.uint8), np.uint8(255)).view(np.uint32)[0]
        return words.view(np.uint8).reshape(rgb.shape)
    out = np.where(mask[..., None], rgb, dimmed)
    out[edge] = OUTLINE.astype(np.uint8)
    return out


def _word(rgb: Union[Sequence[int], np.ndarray]) -> np.uint32:
    """One RGBX pixel (padding byte 255) as the 32-bit word of an RGBX array's view."""
    return np.array(list(rgb) + [255], np.uint8).view(np.uint32)[0]


def draw_strip(
    tiles: Sequence[np.ndarray],
    dimmed: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    thumb: int,
    gap: int = 2,
    background: int = 255,
) -> np.ndarray:
    """RGBX strip [thumb, W, 4] of RGBX tiles [thumb, w_i, 4] side by side, ``gap`` background pixels
    apart, each drawn as ``overlay(tile, mask, dimmed=dimmed_tile)`` (the same pixels) straight into
    the strip: the dimmed tile, the tile where the mask is, the outline; 32-bit words, no stacking.
    ``masks[i]`` bool [thumb, w_i]. A blank RGB square when there is no tile."""
    if not len(tiles):
        return np.full((thumb, thumb, 3), background, np.uint8)
    widths = [t.shape[1] for t in tiles]
    strip = np.full((thumb, sum(widths) + gap * (len(tiles) - 1)), _word([background] * 3), np.uint32)
    same = len(set(widths)) == 1
    edges = _boundary(np.asarray(masks)) if same else [_boundary(m) for m in masks]
    outline, x = _word(OUTLINE.astype(np.uint8)), 0
    for t, d, m, e in zip(tiles, dimmed, masks, edges):
        view = strip[:, x : x + t.shape[1]]
        view[...] = np.ascontiguousarray(d).view(np.uint32)[..., 0]
        np.copyto(view, np.ascontiguousarray(t).view(np.uint32)[..., 0], where=m)
        np.copyto(view, outline, where=e)
        x += t.shape[1] + gap
    return strip.view(np.uint8).reshape(strip.shape + (4,))


def unit_strip(
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    threshold: float,
    thumb: int = 112,
    gap: int = 2,
    background: int = 255,
    mask_size: Optional[tuple] = None,
    mode: str = "bilinear",
) -> np.ndarray:
    """One row of thumbnails (``thumb`` px high): each image with its unit mask.

    ``images`` are H x W x 3 uint8; ``maps[i]`` is the layer-resolution activation map of ``images[i]``.
    The mask is computed at ``mask_size`` (the segmentation size the tally used; default the image's
    own size) with upsampling ``mode`` (the recorded one), then enlarged to the image.
    """
    tiles = []
    for rgb, act in zip(images, maps):
        h, w = rgb.shape[:2]
        mh, mw = mask_size or (h, w)
        comp = overlay(rgb, enlarge_mask(unit_mask(act, threshold, mh, mw, mode), h, w))
        tw = max(1, round(w * thumb / h))
        tiles.append(np.asarray(Image.fromarray(comp).resize((tw, thumb), Image.Resampling.BILINEAR)))
    return strip_from_tiles(tiles, thumb, gap, background)


def _plane_masks(maps: np.ndarray, T: np.ndarray, mask_size: tuple, mode: str) -> np.ndarray:
    """maps [N, h, w] float32, thresholds T [N] float32 -> bool [N, SH, SW]: ``upsample(maps, mask_size,
    mode) > T`` bit for bit, evaluating only the pixels that can pass T.

    As in dissect.stats.upsample, rows are interpolated first (the same interp_rows), then each output
    pixel is ``fl(fl(a * w0) + fl(b * w1))`` of its two row values a, b (a column band shares a, b).
    That value is at most max(a, b) + 4 eps max(|a|, |b|) (weights in [0, 1] summing to 1 within eps,
    three roundings), so a (map, row, band) segment whose max(a, b) + 32 eps max(|a|, |b|) (computed in
    float32, itself within eps) is not above T has no mask pixel and is skipped; the others are
    computed with exactly upsample()'s arithmetic. With T at the top 0.5 % few segments remain."""
    N, h, w = maps.shape
    rows, cols = plane_taps((h, w), mask_size, mode)
    r = interp_rows(torch.from_numpy(maps), rows).numpy()  # [N, SH, w]
    bx0, bx1, xmem = (t.numpy() for t in bands(cols))  # column bands sharing their two source columns
    a, b = r[..., bx0], r[..., bx1]  # [N, SH, bands]
    bound = np.maximum(np.abs(a), np.abs(b))
    bound *= np.float32(2 * relative_margin(torch.float32))
    bound += np.maximum(a, b)
    p, y, band = np.nonzero(bound > T[:, None, None])
    xs = xmem[band]  # [n, m] output columns of each hot segment, -1 = padding
    xc = np.maximum(xs, 0)
    w0, w1 = cols.w0.numpy().astype(np.float32), cols.w1.numpy().astype(np.float32)
    v = a[p, y, band][:, None] * w0[xc] + b[p, y, band][:, None] * w1[xc]
    k, j = np.nonzero((v > T[p][:, None]) & (xs >= 0))
    out = np.zeros((N,) + tuple(mask_size), dtype=bool)
    out[p[k], y[k], xc[k, j]] = True
    return out


def unit_masks(
    maps: np.ndarray,
    thresholds: np.ndarray,
    mask_size: Sequence[int],
    size: Sequence[int],
    mode: str = "bilinear",
    units_per_step: int = 64,
) -> np.ndarray:
    """The masks of many units at once (the report's batched step: one upsample per group of units, not one
    per mask): maps [U, K, h, w] at layer resolution, thresholds [U] -> bool [U, K, *size]. Each mask is
    ``upsample(map, mask_size, mode) > T_u`` (the tally's upsampler and rule at the segmentation size, so
    exactly the counted mask), brought to ``size`` (the thumbnail) by nearest-neighbour indexing (the
    upsampler's 'nearest' taps: exact on a 0/1 plane). Bilinear and nearest skip the pixels that cannot pass T
    (:func:`_plane_masks`); other modes upsample whole planes. Memory is bounded by a block of
    ``units_per_step`` units."""
    maps = np.asarray(maps, dtype=np.float32)
    U, K, h, w = maps.shape
    size, mask_size = (int(size[0]), int(size[1])), (int(mask_size[0]), int(mask_size[1]))
    out = np.empty((U, K) + size, dtype=bool)
    thr = np.asarray(thresholds, dtype=np.float32).reshape(U)
    iy = axis_taps(mask_size[0], size[0], "nearest").i0.numpy()
    ix = axis_taps(mask_size[1], size[1], "nearest").i0.numpy()
    for u0 in range(0, U, units_per_step):
        blk, t = maps[u0 : u0 + units_per_step], thr[u0 : u0 + units_per_step]
        n = blk.shape[0]
        if mode in ("bilinear", "nearest"):
            m = _plane_masks(blk.reshape(n * K, h, w), np.repeat(t, K), mask_size, mode).reshape((n, K) + mask_size)
        else:
            m = (upsample(torch.from_numpy(blk), mask_size, mode) > torch.from_numpy(t).view(-1, 1, 1, 1)).numpy()
        out[u0 : u0 + n] = m if mask_size == size else m[:, :, iy][:, :, :, ix]
    return out


def strip_from_tiles(tiles: Sequence[np.ndarray], thumb: int, gap: int = 2, background: int = 255) -> np.ndarray:
    """Thumbnails (``thumb`` px high, RGB or RGBX) side by side, ``gap`` background pixels apart (a blank
    RGB square if none)."""
    if not tiles:
        return np.full((thumb, thumb, 3), background, np.uint8)
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    strip = np.full((thumb, width, tiles[0].shape[2]), background, np.uint8)
    x = 0
    for t in tiles:
        strip[:, x : x + t.shape[1]] = t
        x += t.shape[1] + gap
    return strip
