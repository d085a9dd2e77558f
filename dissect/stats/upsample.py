"""Upsampling of layer activations to the segmentation size.

Bilinear, nearest and receptive-field ('field') modes are separable two-tap interpolations:
output row y = X[i0[y]] * w0[y] + X[i1[y]] * w1[y], then the same along columns. They are
written as plain elementwise tensor operations, so any subset of output pixels evaluated
with the same taps (see Tally.add_activations) is bit-identical to the full plane.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

MODES = ("bilinear", "nearest", "field", "bicubic")
SEPARABLE = ("bilinear", "nearest", "field")


class Taps(NamedTuple):
    """Per output index along one axis: source indices i0, i1 and weights w0, w1 (float64)."""

    i0: torch.Tensor
    i1: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor


def axis_taps(
    n_in: int, n_out: int, mode: str = "bilinear", offset: float = None, stride: float = None, n_input: int = None
) -> Taps:
    """Taps for one axis. bilinear: align_corners=False (source = (y + 0.5) * n_in / n_out - 0.5,
    clamped to the border cells). nearest: source floor(y * n_in / n_out), as torch's 'nearest'.
    field: cell i centred at input pixel offset + stride * i in an input of n_input pixels."""
    y = torch.arange(n_out, dtype=torch.float64)
    if mode == "nearest":
        i0 = torch.clamp(torch.floor(y * (n_in / n_out)), max=n_in - 1).long()
        one = torch.ones(n_out, dtype=torch.float64)
        return Taps(i0, i0, one, torch.zeros_like(one))
    if mode == "bilinear":
        src = (y + 0.5) * (n_in / n_out) - 0.5
    elif mode == "field":
        if offset is None or stride is None or n_input is None:
            raise ValueError("mode 'field' needs offset, stride and the input size")
        centre = (y + 0.5) * (n_input / n_out) - 0.5  # output pixel centre in input pixels
        src = (centre - offset) / stride
    else:
        raise ValueError(f"no two-tap interpolation for mode {mode!r} (use one of {SEPARABLE})")
    src = src.clamp(0, n_in - 1)
    i0 = torch.floor(src).long()
    i1 = torch.clamp(i0 + 1, max=n_in - 1)
    lam = src - i0
    return Taps(i0, i1, 1.0 - lam, lam)


def plane_taps(
    in_size: Sequence[int], size: Sequence[int], mode: str = "bilinear", field=None, input_size=None
) -> tuple:
    """(row taps, column taps) for upsampling an h x w map to size = (sh, sw)."""
    if mode not in SEPARABLE:
        raise ValueError(f"upsample mode must be one of {MODES}, got {mode!r}")
    if mode == "field":
        if field is None or input_size is None:
            raise ValueError("upsample mode 'field' needs field=(offset, stride) and input_size=(H, W)")
        oy, ox, sy, sx = (field[0], field[0], field[1], field[1]) if len(field) == 2 else tuple(field)
        return (
            axis_taps(in_size[0], size[0], mode, oy, sy, input_size[0]),
            axis_taps(in_size[1], size[1], mode, ox, sx, input_size[1]),
        )
    return axis_taps(in_size[0], size[0], mode), axis_taps(in_size[1], size[1], mode)


def interp_rows(acts: torch.Tensor, rows: Taps) -> torch.Tensor:
    """[..., h, w] -> [..., sh, w] along the rows."""
    w0 = rows.w0.to(acts.device, acts.dtype).unsqueeze(1)
    w1 = rows.w1.to(acts.device, acts.dtype).unsqueeze(1)
    i0, i1 = rows.i0.to(acts.device), rows.i1.to(acts.device)
    return acts.index_select(-2, i0) * w0 + acts.index_select(-2, i1) * w1


def upsample(
    acts: torch.Tensor,
    size: Sequence[int],
    mode: str = "bilinear",
    field: Optional[Sequence[float]] = None,
    input_size: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """acts [B, U, h, w] -> [B, U, sh, sw].

    ``bilinear`` (default) is align_corners=False bilinear (as torch's interpolate, to within
    float rounding); ``nearest`` as torch's 'nearest'; ``bicubic`` is torch's interpolate.
    ``field`` is receptive-field aligned: ``field = (offset, stride)`` in input pixels (or
    ``(oy, ox, sy, sx)``), feature cell i centred at input coordinate offset + stride * i;
    ``input_size = (H, W)`` is the network input size; values between cell centres are
    bilinear, outside them they take the border cell's value.
    """
    if acts.dim() != 4:
        raise ValueError(f"activations must be [B, U, h, w], got shape {tuple(acts.shape)}")
    size = (int(size[0]), int(size[1]))
    if mode == "bicubic":
        return F.interpolate(acts, size=size, mode="bicubic", align_corners=False)
    rows, cols = plane_taps(acts.shape[2:], size, mode, field, input_size)
    r = interp_rows(acts, rows)  # [B, U, sh, w]
    w0 = cols.w0.to(acts.device, acts.dtype)
    w1 = cols.w1.to(acts.device, acts.dtype)
    i0, i1 = cols.i0.to(acts.device), cols.i1.to(acts.device)
    rt = r.transpose(-1, -2)  # gather whole rows (fast) instead of single elements
    out = rt.index_select(-2, i0).mul_(w0.unsqueeze(1))  # in place: the same roundings
    out.add_(rt.index_select(-2, i1).mul_(w1.unsqueeze(1)))
    return out.transpose(-1, -2).contiguous()


def bands(taps: Taps, cap: int = None) -> tuple:
    """Split the output indices into runs sharing (i0, i1), each at most ``cap`` long (default
    ceil(n_out / n_in)). Returns (band i0 [n], band i1 [n], members [n, m] padded with -1)."""
    n_out = taps.i0.numel()
    n_in = int(torch.maximum(taps.i0, taps.i1).max()) + 1 if n_out else 1
    cap = cap or max(1, -(-n_out // n_in))
    key = taps.i0 * n_in + taps.i1
    new = torch.ones(n_out, dtype=torch.bool)
    new[1:] = key[1:] != key[:-1]
    run = torch.cumsum(new.long(), 0) - 1
    run_start = torch.nonzero(new).squeeze(1)
    pos = torch.arange(n_out) - run_start[run]  # position inside its run
    new |= (pos % cap) == 0
    starts = torch.nonzero(new).squeeze(1)
    counts = torch.diff(torch.cat([starts, torch.tensor([n_out])]))
    m = int(counts.max()) if counts.numel() else 0
    ar = torch.arange(m).unsqueeze(0)
    members = torch.where(ar < counts.unsqueeze(1), starts.unsqueeze(1) + ar, torch.full((starts.numel(), m), -1))
    return taps.i0[starts], taps.i1[starts], members


def relative_margin(dtype: torch.dtype) -> float:
    """Bound on the relative rounding of a two-tap-by-two-tap interpolation (a few ulps)."""
    return 16 * torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


__all__ = [
    "upsample",
    "axis_taps",
    "plane_taps",
    "interp_rows",
    "bands",
    "Taps",
    "MODES",
    "SEPARABLE",
    "relative_margin",
]
