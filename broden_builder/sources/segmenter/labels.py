"""From a segmentation model's scores to label planes at the store's segmentation size.

The store keeps a label plane only at the native pixels its resize rule samples
(broden_builder.resize.sampled_indices: ``segmentation_size`` rows and columns). The scores of a
model, [C, h, w] at the model's own resolution, are therefore read at exactly those native
pixels by the bilinear rule of ``torch.nn.functional.interpolate(size=(H, W), mode="bilinear",
align_corners=False)`` (what the Hugging Face post-processing does before its argmax), without
building the C x H x W upsampled array: the planes are those of "upsample to the image, then
resize with the store's rule", at S x S cost. The grid is separable, so rows and columns are
interpolated one after the other (written here because no library reads an interpolation at
arbitrary pixel centres without the whole grid).

Labelling rules (docs in source.py):

- exclusive models (softmax over all classes: Hugging Face, torchvision): a pixel takes its
  highest-scoring class over all classes, in that class's category;
- other models (``file.py:function`` unless its object sets ``exclusive = True``): in each
  category, a pixel takes the highest-scoring class of that category;
- the pixel stays unlabelled when that score is below the class's threshold, or not above 0
  (no class claims it), or the class is dropped;
- a class covering less than ``min_area`` (a fraction of the image, counted on the S x S grid)
  of an image is removed from that image.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch


def _axis_weights(n_out_index: torch.Tensor, n_in: int, n_native: int) -> tuple:
    """(i0, i1, w1) of align_corners=False bilinear reads of native pixels ``n_out_index`` from ``n_in`` cells."""
    scale = n_in / n_native
    src = ((n_out_index.double() + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (src - i0.double()).float()


def scores_at(scores: torch.Tensor, native: tuple, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """Scores [C, h, w] upsampled (bilinear, align_corners=False) to the native size ``(H, W)``,
    read at native pixels ``rows`` x ``cols`` only. Returns [C, len(rows), len(cols)], float32.
    Equal to ``interpolate(scores[None], (H, W), mode='bilinear')[0][:, rows][:, :, cols]``."""
    h, w = scores.shape[-2:]
    H, W = native
    s = scores.float()
    if (h, w) == (H, W):
        return s[:, torch.as_tensor(rows, device=s.device)][:, :, torch.as_tensor(cols, device=s.device)]
    r0, r1, wr = (t.to(s.device) for t in _axis_weights(torch.as_tensor(rows), h, H))
    s = s[:, r0] * (1 - wr)[None, :, None] + s[:, r1] * wr[None, :, None]
    c0, c1, wc = (t.to(s.device) for t in _axis_weights(torch.as_tensor(cols), w, W))
    return s[:, :, c0] * (1 - wc)[None, None, :] + s[:, :, c1] * wc[None, None, :]


def _remove_small(plane: np.ndarray, min_area: float) -> np.ndarray:
    """Zero the codes of ``plane`` [S, S] covering less than ``min_area`` of it (a fraction)."""
    if min_area <= 0:
        return plane
    codes, counts = np.unique(plane[plane > 0], return_counts=True)
    small = codes[counts < min_area * plane.size]
    if small.size:
        plane = np.where(np.isin(plane, small), 0, plane)
    return plane


def label_planes(scores: torch.Tensor, categories: Sequence[str], thresholds: torch.Tensor, keep: torch.Tensor,
                 exclusive: bool, min_area: float) -> dict:
    """{category: int32 plane [S, S] of class index + 1 (0 unlabelled)} from sampled scores.

    ``scores`` [C, S, S] (confidences, e.g. probabilities); ``categories[k]`` the category of
    class k; ``thresholds`` [C] the least score a class needs; ``keep`` [C] bool, False for
    dropped classes; ``exclusive``: one class per pixel over all categories (module docstring).
    """
    C = scores.shape[0]
    cats = list(dict.fromkeys(categories))
    groups = {c: torch.tensor([k for k in range(C) if categories[k] == c], device=scores.device) for c in cats}
    thresholds, keep = thresholds.to(scores.device), keep.to(scores.device)
    out = {}
    if exclusive:
        best, cls = scores.max(dim=0)
        ok = (best > 0) & (best >= thresholds[cls]) & keep[cls]
    for c in cats:
        idx = groups[c]
        if exclusive:
            mine = ok & torch.isin(cls, idx)
            plane = torch.where(mine, cls + 1, 0)
        else:
            best, j = scores[idx].max(dim=0)
            k = idx[j]
            plane = torch.where((best > 0) & (best >= thresholds[k]) & keep[k], k + 1, 0)
        out[c] = _remove_small(plane.to(torch.int32).cpu().numpy(), min_area)
    return out


def class_thresholds(classes: Sequence[str], threshold, where: str) -> torch.Tensor:
    """[C] thresholds from a number (every class) or {class name: number} (others 0)."""
    if isinstance(threshold, Mapping):
        unknown = sorted(set(threshold) - set(classes))
        if unknown:
            raise ValueError(f"{where}: threshold names classes the model does not have: {unknown[:5]}")
        return torch.tensor([float(threshold.get(c, 0.0)) for c in classes])
    return torch.full((len(classes),), float(threshold or 0.0))


__all__ = ["scores_at", "label_planes", "class_thresholds"]
