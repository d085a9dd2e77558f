"""TopKImages: per unit, the k images with the largest maximum activation, with their maps."""
from __future__ import annotations

from typing import Optional

import torch


class TopKImages:
    """Per unit, the ``k`` images with the largest max activation (ties: smaller image index first).

    Keeps ``values`` [U, n] (float32), ``indices`` [U, n] (int64 image indices) and ``maps``
    [U, n, h, w] (``maps_dtype``, float16 by default), n = min(k, images seen), best first.
    """

    reduction = "gather"  # see dissect.stats.protocol

    def __init__(self, units: int, k: int, device="cpu", maps_dtype: torch.dtype = torch.float16):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.units, self.k = int(units), int(k)
        self.device = torch.device(device)
        self.maps_dtype = maps_dtype
        self.values: Optional[torch.Tensor] = None
        self.indices: Optional[torch.Tensor] = None
        self.maps: Optional[torch.Tensor] = None

    def add(self, acts: torch.Tensor, image_indices) -> None:
        """Add activations [B, U, h, w] of the images numbered ``image_indices`` [B]."""
        if acts.dim() != 4 or acts.shape[1] != self.units:
            raise ValueError(f"activations of shape {tuple(acts.shape)} are not [B, {self.units}, h, w]")
        idx = torch.as_tensor(image_indices, dtype=torch.long, device=self.device).reshape(-1)
        if idx.numel() != acts.shape[0]:
            raise ValueError(f"{idx.numel()} image indices for a batch of {acts.shape[0]} activation maps")
        acts = acts.detach().to(self.device)
        u, b = self.units, acts.shape[0]
        vals = acts.amax(dim=(2, 3)).t().float()  # [U, B]
        maps = acts.transpose(0, 1).to(self.maps_dtype)  # [U, B, h, w]
        self._absorb(vals, idx.unsqueeze(0).expand(u, b), maps)

    def _absorb(self, vals: torch.Tensor, idx: torch.Tensor, maps: torch.Tensor) -> None:
        if self.values is not None:
            if maps.shape[2:] != self.maps.shape[2:]:
                raise ValueError(f"activation maps of size {tuple(maps.shape[2:])} differ from earlier {tuple(self.maps.shape[2:])}")
            vals = torch.cat([self.values, vals], 1)
            idx = torch.cat([self.indices, idx], 1)
            maps = torch.cat([self.maps, maps.to(self.maps_dtype)], 1)
        # order by image index, then stably by value descending: ties keep the smaller index first
        o1 = torch.argsort(idx, dim=1, stable=True)
        v1 = torch.gather(vals, 1, o1)
        o2 = torch.argsort(v1, dim=1, descending=True, stable=True)
        order = torch.gather(o1, 1, o2)[:, : self.k]
        self.values = torch.gather(vals, 1, order)
        self.indices = torch.gather(idx, 1, order)
        h, w = maps.shape[2:]
        self.maps = torch.gather(maps, 1, order[:, :, None, None].expand(-1, -1, h, w))

    def merge(self, other: "TopKImages") -> None:
        """Fold in another shard's lists (disjoint images)."""
        if (other.units, other.k) != (self.units, self.k):
            raise ValueError(f"cannot merge TopKImages with (units, k) {(other.units, other.k)} into {(self.units, self.k)}")
        if other.values is not None:
            self._absorb(other.values.to(self.device), other.indices.to(self.device), other.maps.to(self.device))

    def result(self) -> dict:
        """{'values': [U, n] float32, 'indices': [U, n] int64, 'maps': [U, n, h, w]} on the CPU."""
        if self.values is None:
            raise ValueError("TopKImages has seen no images")
        return {"values": self.values.cpu(), "indices": self.indices.cpu(), "maps": self.maps.cpu()}

    def state_dict(self) -> dict:
        t = lambda x: None if x is None else x.cpu()
        return {"units": self.units, "k": self.k, "values": t(self.values), "indices": t(self.indices), "maps": t(self.maps)}

    def load_state_dict(self, d: dict) -> None:
        if (d["units"], d["k"]) != (self.units, self.k):
            raise ValueError(f"TopKImages state (units, k) {(d['units'], d['k'])} does not match {(self.units, self.k)}")
        t = lambda x: None if x is None else x.to(self.device)
        self.values, self.indices = t(d["values"]), t(d["indices"])
        self.maps = None if d["maps"] is None else d["maps"].to(self.device, self.maps_dtype)

    def to(self, device) -> "TopKImages":
        self.device = torch.device(device)
        for name in ("values", "indices", "maps"):
            x = getattr(self, name)
            if x is not None:
                setattr(self, name, x.to(self.device))
        return self
