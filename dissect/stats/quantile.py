"""TopQuantile: the exact top quantile of every unit, streaming and mergeable across shards."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def _neighbour_indices(n: int, p: float) -> tuple:
    """numpy's 'linear' method: ascending indices (previous, next) and gamma for quantile p of n values."""
    virtual = np.asanyarray((n - 1) * p)  # same expression and dtype as numpy's get_virtual_index
    prev = float(np.floor(virtual))
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    if virtual < 0:
        return 0, 0, 0.0
    gamma = float(virtual - prev)
    return int(prev), int(prev) + 1, gamma


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """numpy's quantile interpolation, written out so the result is bit-identical."""
    diff = b - a
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


class TopQuantile:
    """Exact per-unit threshold ``np.quantile(values_of_unit, 1 - quantile)`` (linear method).

    Keeps, per unit, the running largest ``r`` values (r = ceil(quantile * total_count) + 1,
    or what numpy's interpolation needs), so merging shards is exact. ``total_count`` is the
    number of values each unit will see in all (images x h x w over every shard).
    """

    reduction = "gather"  # see dissect.stats.protocol

    def __init__(self, units: int, quantile: float, total_count: int, device="cpu"):
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
        if total_count < 1:
            raise ValueError(f"total_count must be >= 1, got {total_count}")
        self.units = int(units)
        self.quantile = float(quantile)
        self.total_count = int(total_count)
        self.device = torch.device(device)
        lo, _, _ = _neighbour_indices(self.total_count, 1.0 - self.quantile)
        self.keep = min(self.total_count, max(math.ceil(self.quantile * self.total_count) + 1, self.total_count - lo))
        self.values: Optional[torch.Tensor] = None  # [U, <= keep], descending
        self.count = 0  # values seen per unit

    def add(self, acts: torch.Tensor) -> None:
        """Add activations [B, U, h, w] (or [N, U]) at the layer's own resolution."""
        if acts.dim() < 2 or acts.shape[1] != self.units:
            raise ValueError(f"activations of shape {tuple(acts.shape)} do not have {self.units} units in dimension 1")
        flat = acts.detach().to(self.device).transpose(0, 1).reshape(self.units, -1)
        if not torch.isfinite(flat).all():
            bad = (~torch.isfinite(flat)).any(1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"activations contain NaN or inf (units {bad}...)")
        self.count += flat.shape[1]
        if self.count > self.total_count:
            raise ValueError(f"TopQuantile got {self.count} values per unit, more than total_count={self.total_count}")
        self._absorb(flat)

    def _absorb(self, flat: torch.Tensor) -> None:
        if self.values is not None:
            flat = torch.cat([self.values, flat.to(self.values.dtype)], 1)
        k = min(self.keep, flat.shape[1])
        self.values = torch.topk(flat, k, dim=1, largest=True, sorted=True).values

    def merge(self, other: "TopQuantile") -> None:
        """Fold in another shard's statistic (same units, quantile and total_count)."""
        if (other.units, other.quantile, other.total_count) != (self.units, self.quantile, self.total_count):
            raise ValueError("cannot merge TopQuantile with different units/quantile/total_count: "
                             f"{(self.units, self.quantile, self.total_count)} vs {(other.units, other.quantile, other.total_count)}")
        self.count += other.count
        if self.count > self.total_count:
            raise ValueError(f"merged TopQuantile saw {self.count} values per unit, more than total_count={self.total_count}")
        if other.values is not None:
            self._absorb(other.values.to(self.device))

    def thresholds(self) -> torch.Tensor:
        """Tensor[U] of thresholds, equal to numpy's quantile over all values seen."""
        if self.count != self.total_count or self.values is None:
            raise ValueError(f"TopQuantile saw {self.count} values per unit, expected total_count={self.total_count}")
        n = self.total_count
        lo, hi, gamma = _neighbour_indices(n, 1.0 - self.quantile)
        vals = self.values.cpu().numpy()  # descending: ascending index i is column n - 1 - i
        a, b = vals[:, n - 1 - lo], vals[:, n - 1 - hi]
        return torch.from_numpy(np.ascontiguousarray(_lerp(a, b, gamma))).to(self.device)

    def state_dict(self) -> dict:
        return {"units": self.units, "quantile": self.quantile, "total_count": self.total_count,
                "count": self.count, "values": None if self.values is None else self.values.cpu()}

    def load_state_dict(self, d: dict) -> None:
        if (d["units"], d["quantile"], d["total_count"]) != (self.units, self.quantile, self.total_count):
            raise ValueError("TopQuantile state does not match: "
                             f"{(d['units'], d['quantile'], d['total_count'])} vs {(self.units, self.quantile, self.total_count)}")
        self.count = int(d["count"])
        self.values = None if d["values"] is None else d["values"].to(self.device)

    @classmethod
    def from_state_dict(cls, d: dict, device="cpu") -> "TopQuantile":
        out = cls(d["units"], d["quantile"], d["total_count"], device)
        out.load_state_dict(d)
        return out

    def to(self, device) -> "TopQuantile":
        self.device = torch.device(device)
        if self.values is not None:
            self.values = self.values.to(self.device)
        return self
