"""TopKImages: per unit, the k images with the largest maximum activation, with their maps."""

from __future__ import annotations


import torch

from .protocol import DeclaredState


class TopKImages(DeclaredState):
    """Per unit, the ``k`` images with the largest max activation (ties: smaller image index first).

    Keeps ``values`` [U, n] (float32), ``indices`` [U, n] (int64 image indices) and ``maps``
    [U, n, h, w] (``maps_dtype``, float16 by default), n = min(k, images seen), best first.
    """

    reduction = "gather"  # see dissect.stats.protocol
    values: torch.Tensor  # the state tensors (None before the first batch), for the type checker
    indices: torch.Tensor
    maps: torch.Tensor
    identity, tensors = ("units", "k"), ("values", "indices", "maps")

    def __init__(self, units: int, k: int, device="cpu", maps_dtype: torch.dtype = torch.float16):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.units, self.k = int(units), int(k)
        self.device = torch.device(device)
        self.maps_dtype = maps_dtype
        self.values = self.indices = self.maps = None

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
        self._absorb(vals, idx.unsqueeze(0).expand(u, b), acts, batch_first=True)

    def _absorb(self, vals: torch.Tensor, idx: torch.Tensor, maps: torch.Tensor, batch_first: bool = False) -> None:
        """Keep the k best of the kept lists and new candidates (vals, idx [U, n]); ``maps`` holds the
        candidates' maps, [n, U, h, w] when ``batch_first`` else [U, n, h, w]. Only the maps that are
        kept are copied (converted to maps_dtype), not the whole batch."""
        old = 0
        if self.values is not None:
            if maps.shape[2:] != self.maps.shape[2:]:
                raise ValueError(
                    f"activation maps of size {tuple(maps.shape[2:])} differ from earlier {tuple(self.maps.shape[2:])}"
                )
            old = self.values.shape[1]
            vals = torch.cat([self.values, vals], 1)
            idx = torch.cat([self.indices, idx], 1)
        # order by image index, then stably by value descending: ties keep the smaller index first
        o1 = torch.argsort(idx, dim=1, stable=True)
        v1 = torch.gather(vals, 1, o1)
        o2 = torch.argsort(v1, dim=1, descending=True, stable=True)
        order = torch.gather(o1, 1, o2)[:, : self.k]
        h, w = maps.shape[2:]
        unit = torch.arange(self.units, device=order.device).unsqueeze(1).expand_as(order)
        kept = torch.empty(order.shape + (h, w), dtype=self.maps_dtype, device=order.device)
        from_old = order < old
        if old:
            kept[from_old] = self.maps[unit[from_old], order[from_old]]
        new, j = ~from_old, order - old
        kept[new] = (maps[j[new], unit[new]] if batch_first else maps[unit[new], j[new]]).to(self.maps_dtype)
        self.values = torch.gather(vals, 1, order)
        self.indices = torch.gather(idx, 1, order)
        self.maps = kept

    def merge(self, other: "TopKImages") -> None:
        """Fold in another shard's lists (disjoint images)."""
        self.same_as(other)
        if other.values is not None:
            self._absorb(other.values.to(self.device), other.indices.to(self.device), other.maps.to(self.device))

    def result(self) -> dict:
        """{'values': [U, n] float32, 'indices': [U, n] int64, 'maps': [U, n, h, w]} on the CPU."""
        if self.values is None:
            raise ValueError("TopKImages has seen no images")
        return {"values": self.values.cpu(), "indices": self.indices.cpu(), "maps": self.maps.cpu()}

    def _loaded(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.maps_dtype) if name == "maps" else x.to(self.device)
