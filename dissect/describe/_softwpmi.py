"""SoftWPMI, the similarity of CLIP-Dissect (Oikarinen & Weng, ICLR 2023, section 3, eq. 5-6).

For a unit k and a word t, with P[i, t] the image-text cosine similarity of probe image i:

- p(t | x_i) = softmax_t(a * P[i, :])                       (a: temperature, 10 in the paper)
- B_k: the unit's top-``top_k`` images by activation; image of rank r (0-based) belongs to the
  unit's concept with probability p_r, falling linearly from ``p_start`` to ``p_end``:
  p_r = p_start - r / top_k * (p_start - p_end)
- log p(t | B_k) = sum_r log(1 - p_r + p_r * p(t | x_r) + min_prob)    ("soft" membership)
- log p(t) = log mean_k' p(t | B_k')   over the units described together (the prior)
- SoftWPMI(k, t) = log p(t | B_k) - lam * log p(t)

Written here from the paper's formulas (no library implements it); the test checks it against a
plain loop over units, words and images.
"""

from __future__ import annotations

import math

import torch


def soft_wpmi(
    image_text: torch.Tensor,
    activations: torch.Tensor,
    top_k: int = 100,
    a: float = 10.0,
    lam: float = 1.0,
    p_start: float = 0.998,
    p_end: float = 0.97,
    min_prob: float = 1e-7,
    budget: int = 1 << 26,
) -> torch.Tensor:
    """SoftWPMI [U, T] of every unit and word (module docstring).

    ``image_text`` [N, T]: cosine similarity of each probe image's and word's embeddings;
    ``activations`` [N, U]: each unit's summary activation per image (spatial mean). ``top_k`` is
    capped at N. Units are processed in chunks of about ``budget`` floats of [k, chunk, T].
    Raises ValueError when the two do not have the same number of images or one is empty.
    """
    if image_text.ndim != 2 or activations.ndim != 2 or image_text.shape[0] != activations.shape[0]:
        raise ValueError(
            f"image-text similarities {tuple(image_text.shape)} and activations "
            f"{tuple(activations.shape)} must be [N, T] and [N, U] over the same N images"
        )
    N, T = image_text.shape
    U = activations.shape[1]
    if N == 0 or T == 0 or U == 0:
        raise ValueError(f"nothing to describe: {N} images, {T} words, {U} units")
    probs = torch.softmax(a * image_text.double(), dim=1)
    k = min(int(top_k), N)
    top = torch.topk(activations.double(), k=k, dim=0).indices  # [k, U]
    p_in = (p_start - torch.arange(k, dtype=torch.float64) / top_k * (p_start - p_end))[:, None, None]
    chunk = max(1, budget // max(1, k * T))
    log_given = torch.empty(U, T, dtype=torch.float64)
    for lo in range(0, U, chunk):
        sel = probs[top[:, lo : lo + chunk]]  # [k, c, T]
        log_given[lo : lo + chunk] = torch.log(1 + p_in * (sel - 1) + min_prob).sum(dim=0)
    log_prior = torch.logsumexp(log_given, dim=0) - math.log(U)
    return (log_given - lam * log_prior[None, :]).float()


__all__ = ["soft_wpmi"]
