"""p-values, q-values and significance of units against their permutation null.

For each unit, the observed statistic x is its best IoU over labels and the null holds the same
statistic under N permutations of the image pairing (dissect.stats.null).

- Inside the null's range (some null value >= x): the permutation p-value
  ``(1 + #{null >= x}) / (N + 1)`` (Phipson & Smyth 2010: never 0, exact for the test).
- Beyond it (x above every null value): a Gumbel tail, fitted to the N null maxima by moments
  (scale = sd * sqrt(6) / pi, location = mean - 0.5772 * scale), gives p = P(Gumbel >= x),
  capped at 1 / (N + 1), so that p can fall below 1 / (N + 1) and hundreds of units can pass a
  correction. Why Gumbel: each null value is a maximum over many labels' IoUs, and maxima tend
  to a generalised extreme value law (Fisher-Tippett). IoU is bounded, so the true law has the
  bounded (Weibull) tail, which is lighter than the Gumbel's: the fitted Gumbel overstates p,
  i.e. it is conservative, where a normal fit understates the tail of a maximum. With fewer
  than 20 null values, or null values all equal, no tail is fitted and p stays 1 / (N + 1).
- q-values: Benjamini-Hochberg over the layer's units (scipy.stats.false_discovery_control).
- significant: q <= alpha.

Each unit records which of the two gave its p (``p_method``: "permutation" or "tail").
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: fewest null values for which the tail is fitted
MIN_TAIL = 20
#: smallest p reported (a tail probability below it is reported as this)
P_FLOOR = 1e-300
DETECTORS = ("iou", "significant", "both")


def permutation_p(observed: np.ndarray, null: np.ndarray) -> tuple:
    """(p [U] float64, method [U] list of "permutation" | "tail") for observed [U] against
    null [N, U] (N >= 1), as described in the module docstring."""
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    N = null.shape[0]
    if N < 1 or null.shape[1:] != observed.shape:
        raise ValueError(f"null of shape {null.shape} for {observed.shape} observed values")
    exceed = (null >= observed[None, :]).sum(0)
    p = (1.0 + exceed) / (N + 1.0)
    method = ["permutation"] * observed.size
    for u in np.flatnonzero(exceed == 0):
        t = gumbel_tail(observed[u], null[:, u])
        if t is not None and t < p[u]:
            p[u], method[u] = t, "tail"
    return p, method


def gumbel_tail(x: float, values: np.ndarray):
    """P(X >= x) for X Gumbel-distributed with the moments of ``values`` [N] (scipy.stats.gumbel_r),
    floored at P_FLOOR; None when N < MIN_TAIL or the values have no spread."""
    from scipy.stats import gumbel_r

    values = np.asarray(values, dtype=np.float64)
    if values.size < MIN_TAIL:
        return None
    sd = float(values.std(ddof=1))
    if not sd > 0:
        return None
    scale = sd * math.sqrt(6.0) / math.pi
    loc = float(values.mean()) - np.euler_gamma * scale
    return max(float(gumbel_r.sf(x, loc=loc, scale=scale)), P_FLOOR)


def q_values(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values [U] (scipy.stats.false_discovery_control, method 'bh')."""
    from scipy.stats import false_discovery_control

    arr = np.asarray(p, dtype=np.float64)
    return false_discovery_control(arr, method="bh") if arr.size else arr


def null_fields(observed: np.ndarray, null: np.ndarray, alpha: float) -> list:
    """Per unit (unit order) the result.json fields of the null: {"p_value", "q_value",
    "significant" (q <= alpha), "null_iou" (mean of the unit's null best IoU), "null_iou_95" (its
    95th percentile), "p_method"}; observed [U], null [N, U] best IoUs."""
    null = np.asarray(null, dtype=np.float64)
    p, method = permutation_p(observed, null)
    q = q_values(p)
    mean, p95 = null.mean(0), np.quantile(null, 0.95, axis=0)
    return [
        {
            "p_value": float(p[u]),
            "q_value": float(q[u]),
            "significant": bool(q[u] <= alpha),
            "null_iou": float(mean[u]),
            "null_iou_95": float(p95[u]),
            "p_method": method[u],
        }
        for u in range(p.size)
    ]


def is_detector(unit: dict, detector: str) -> bool:
    """What counts as a detector (--detector): 'iou' its best IoU reaches the threshold (the paper's
    rule, unit["iou_detector"] or unit["detector"]), 'significant' q <= alpha, 'both' both."""
    by_iou = bool(unit.get("iou_detector", unit.get("detector")))
    if detector == "iou":
        return by_iou
    sig = bool(unit.get("significant"))
    return sig if detector == "significant" else (sig and by_iou)


def significant_detectors(result) -> list:
    """The units of a layer result (a LayerResult, or anything with ``units``) that are significant
    against the permutation null (q <= alpha), best IoU first; [] when the run had no null."""
    return sorted(
        (u for u in result.units if u.get("significant")),
        key=lambda u: (-float(u.get("iou", 0.0)), int(u["unit_index"])),
    )


__all__ = [
    "permutation_p",
    "gumbel_tail",
    "q_values",
    "null_fields",
    "is_detector",
    "significant_detectors",
    "DETECTORS",
    "MIN_TAIL",
]
