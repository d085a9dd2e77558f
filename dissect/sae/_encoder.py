"""A sparse autoencoder's encoder applied to a layer's maps: [B, U, h, w] -> [B, F, h, w].

Every SAE this package reads (its own format and SAELens', dissect.sae._io) is held in one
layout, SAELens' (``W_enc`` [U, F], ``b_enc`` [F], ``W_dec`` [F, U], ``b_dec`` [U]):

    pre = (x - b_dec) @ W_enc + b_enc                      x: one position's U unit values
    relu:     f = max(pre, 0)
    topk:     f = max(pre, 0) on the k largest entries of pre, 0 elsewhere (Gao et al. 2024)
    jumprelu: f = pre where pre > threshold (per feature), 0 elsewhere (Rajamanoharan et al. 2024)
    x_hat = f @ W_dec + b_dec

Feature j of a position is ``f[j]``; the maps are the features at every spatial position, laid
out as the units are (after the layer's layout, dissect.layouts), so every statistic of a
dissection sees features exactly as it sees units.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import torch

from ..errors import DissectError

ACTIVATIONS = ("relu", "topk", "jumprelu")


class SAEError(DissectError):
    """An SAE that cannot be used (the message names the file and the problem)."""


class SparseEncoder:
    """The encoder half of an SAE (float32 on ``device``); ``decode`` gives reconstructions.

    ``W_enc`` [U, F], ``b_enc`` [F], ``b_dec`` [U], ``W_dec`` [F, U] (optional: encoding does
    not need it), ``k`` (topk), ``threshold`` [F] (jumprelu). ``record``: what results say about
    the SAE (its identity, from dissect.sae._io). Raises SAEError for inconsistent shapes.
    """

    def __init__(
        self,
        W_enc,
        b_enc,
        b_dec,
        activation: str,
        k: Optional[int] = None,
        threshold=None,
        W_dec=None,
        record: Optional[dict] = None,
    ):
        f32 = lambda t: None if t is None else torch.as_tensor(np.asarray(t, dtype=np.float32))
        self.W_enc, self.b_enc, self.b_dec, self.W_dec = f32(W_enc), f32(b_enc), f32(b_dec), f32(W_dec)
        self.threshold = f32(threshold)
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))):
            raise SAEError(f"k must be a whole number, got {k!r}")
        self.activation, self.k = activation, None if k is None else int(k)
        self.record = dict(record or {})
        if activation not in ACTIVATIONS:
            raise SAEError(f"activation {activation!r} is not one of {ACTIVATIONS}")
        if self.W_enc.ndim != 2:
            raise SAEError(f"W_enc must be [d_in, d_sae], got shape {tuple(self.W_enc.shape)}")
        u, f = self.W_enc.shape
        for name, t, shape in (
            ("b_enc", self.b_enc, (f,)),
            ("b_dec", self.b_dec, (u,)),
            ("W_dec", self.W_dec, (f, u)),
            ("threshold", self.threshold, (f,)),
        ):
            if t is not None and tuple(t.shape) != shape:
                raise SAEError(f"{name} has shape {tuple(t.shape)}; W_enc {u} x {f} needs {shape}")
        if activation == "topk" and not (self.k and 1 <= self.k <= f):
            raise SAEError(f"a topk SAE needs 1 <= k <= {f}, got k = {k}")
        if activation == "jumprelu" and self.threshold is None:
            raise SAEError("a jumprelu SAE needs a threshold per feature")
        self.units, self.features = int(u), int(f)

    def to(self, device) -> "SparseEncoder":
        """A copy of this encoder with its tensors on ``device`` (this one is left as it is)."""
        import copy

        out = copy.copy(self)
        for name in ("W_enc", "b_enc", "b_dec", "W_dec", "threshold"):
            t = getattr(self, name)
            if t is not None:
                setattr(out, name, t.to(device))
        return out

    def cpu(self) -> "SparseEncoder":
        """A copy on the CPU (as ``tensor.cpu()``)."""
        return self.to("cpu")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [S, U] (any float dtype) -> features [S, F] float32."""
        dev = self.W_enc.device
        pre = (x.to(dev, torch.float32) - self.b_dec) @ self.W_enc + self.b_enc
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold)
        top = torch.topk(pre, self.k, dim=1)
        return torch.zeros_like(pre).scatter_(1, top.indices, torch.relu(top.values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """features [S, F] -> reconstruction [S, U] float32 (needs W_dec)."""
        if self.W_dec is None:
            raise SAEError("this SAE has no decoder weights (W_dec)")
        return f @ self.W_dec + self.b_dec

    def encode_maps(self, acts: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """acts [B, U, h, w] -> features [B, F, h, w] float32 on acts' device, ``chunk`` positions at
        a time (so the [S, F] work tensors stay small whatever F). Raises SAEError for another U."""
        if acts.ndim != 4 or acts.shape[1] != self.units:
            raise SAEError(
                f"the SAE reads {self.units} units but the layer has "
                f"{acts.shape[1] if acts.ndim > 1 else '?'} units (shape {tuple(acts.shape)})"
            )
        b, u, h, w = acts.shape
        flat = acts.permute(0, 2, 3, 1).reshape(-1, u)  # positions in (image, y, x) order
        out = torch.empty(b, h, w, self.features, dtype=torch.float32, device=acts.device)
        view = out.view(-1, self.features)
        for lo in range(0, flat.shape[0], chunk):
            view[lo : lo + chunk] = self.encode(flat[lo : lo + chunk]).to(acts.device)
        return out.permute(0, 3, 1, 2).contiguous()

    def sha256(self) -> str:
        """sha256 of the float32 encoder tensors (W_enc, b_enc, b_dec, threshold) in that order."""
        h = hashlib.sha256()
        for t in (self.W_enc, self.b_enc, self.b_dec, self.threshold):
            if t is not None:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


__all__ = ["SparseEncoder", "SAEError", "ACTIVATIONS"]
