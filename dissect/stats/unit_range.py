"""UnitRange: every unit's smallest and largest activation over the probe set (constant units).

A unit whose activations are the same number at every position of every probe image (a dead
ReLU unit is all 0) carries no information about the images: its top-quantile threshold equals
that number, its mask ``a > T`` is empty and any IoU it gets is a rounding accident of the
upsampling. Network Dissection reports it as such instead of as a non-detector.
A plain running min/max (torch.aminmax) is all it takes; no library is needed.
"""

from __future__ import annotations

from typing import Optional

import torch

from .protocol import DeclaredState


class UnitRange(DeclaredState):
    """Per unit, the min and max of the activations seen (float64, so float16/float32 inputs are exact).

    ``add(acts)`` takes [B, U, h, w] (or [B, U, ...]); ``constant()`` is a bool tensor [U]: True where
    min == max, i.e. the unit took one value over every position of every image added. NaN never
    reaches here (the quantile refuses non-finite activations first).
    """

    reduction = "gather"  # see dissect.stats.protocol: min/max merge exactly in any order
    identity, tensors = ("units",), ("lo", "hi")

    def __init__(self, units: int, device="cpu"):
        self.units = int(units)
        self.device = torch.device(device)
        self.lo: Optional[torch.Tensor] = None  # float64 [U]
        self.hi: Optional[torch.Tensor] = None

    def add(self, acts: torch.Tensor) -> None:
        """Fold in activations [B, U, ...]; raises ValueError when dim 1 is not the unit count."""
        if acts.dim() < 2 or acts.shape[1] != self.units:
            raise ValueError(f"activations of shape {tuple(acts.shape)} are not [B, {self.units}, ...]")
        if acts.shape[0] == 0 or acts[0, 0].numel() == 0:
            return
        flat = acts.detach().transpose(0, 1).reshape(self.units, -1)
        lo, hi = torch.aminmax(flat, dim=1)
        self._fold(lo.to(self.device, torch.float64), hi.to(self.device, torch.float64))

    def _fold(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if self.lo is None:
            self.lo, self.hi = lo.clone(), hi.clone()
        else:
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)

    def merge(self, other: "UnitRange") -> None:
        """Fold in another shard's range (same unit count)."""
        self.same_as(other)
        if other.lo is not None:
            self._fold(other.lo.to(self.device), other.hi.to(self.device))

    def constant(self) -> torch.Tensor:
        """bool [U]: True for a unit with one value everywhere (False for all before any activation)."""
        if self.lo is None:
            return torch.zeros(self.units, dtype=torch.bool)
        return (self.lo == self.hi).cpu()

    def values(self) -> torch.Tensor:
        """float64 [U]: each unit's minimum (its value, for a constant unit); NaN before any activation."""
        if self.lo is None:
            return torch.full((self.units,), float("nan"), dtype=torch.float64)
        return self.lo.cpu()

    def _loaded(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.float64)


__all__ = ["UnitRange"]
