"""The top-k sparse autoencoder trained by ``dissect sae train`` (Gao et al. 2024; Makhzani & Frey 2013).

Written here rather than taken from ``overcomplete`` (Kempner Institute), for two reasons found
when reading its source (version 0.3.0, the newest on PyPI): (1) ``import overcomplete.sae`` runs the
package's ``__init__``, which imports its plotting module, and that calls ``plt.cm.get_cmap``,
removed in matplotlib 3.9, so the import fails with any current matplotlib; (2) its TopKSAE
decodes ``x_hat = z @ D`` with no decoder bias, and its "linear" encoder has no input-side bias,
so its weights do not map onto the SAELens layout this package reads and writes (W_enc, b_enc,
W_dec, b_dec). The model is small: the method is the paper's, written out below.

In normalised units x' (dissect.sae._train):
    pre = (x' - b_pre) @ W_enc + b_enc;  z = TopK(pre) with ReLU on the k kept values;
    x_hat' = z @ W_dec + b_pre;  rows of W_dec (one per feature) kept at unit L2 norm.
Loss: mean squared error of x_hat', plus ``aux_weight`` x the AuxK loss of Gao et al. (sec. A.2):
the residual x' - x_hat' reconstructed by the top ``k_aux`` of the dead features alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TopKSAE(nn.Module):
    """A top-k SAE of ``units`` -> ``features`` (float32). Initialisation (seeded by ``generator``):
    W_dec rows uniform on the unit sphere, W_enc = W_dec^T (Gao et al. 2024, sec. 2.4), biases 0."""

    def __init__(self, units: int, features: int, k: int, generator: torch.Generator):
        super().__init__()
        d = torch.randn(features, units, generator=generator)
        d = d / d.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(d)
        self.W_enc = nn.Parameter(d.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(features))
        self.b_pre = nn.Parameter(torch.zeros(units))
        self.k = int(k)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """x [S, U] -> pre [S, F]."""
        return (x - self.b_pre) @ self.W_enc + self.b_enc

    def decode_sparse(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """sum_j values[s, j] * W_dec[indices[s, j]] for each row s: [S, k] -> [S, U]. The k active
        features are gathered (embedding_bag), not multiplied as a dense [S, F] code: k/F of the work."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    def forward(self, x: torch.Tensor) -> tuple:
        """x [S, U] -> (pre [S, F], indices [S, k] and values [S, k] (ReLU'd) of the code, x_hat [S, U])."""
        pre = self.pre_activations(x)
        top = torch.topk(pre, self.k, dim=1)
        values = torch.relu(top.values)
        return pre, top.indices, values, self.decode_sparse(top.indices, values) + self.b_pre

    def aux_loss(self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor,
                 k_aux: int) -> torch.Tensor:
        """AuxK: mean squared error of (x - x_hat) against the top ``k_aux`` dead features' decoding
        (``dead`` [F] bool); 0 without dead features. The residual is a constant (detached)."""
        n_dead = int(dead.sum())
        if n_dead == 0 or k_aux < 1:
            return x.new_zeros(())
        masked = pre.masked_fill(~dead, float("-inf"))
        top = torch.topk(masked, min(k_aux, n_dead), dim=1)
        residual = (x - x_hat).detach()
        return (self.decode_sparse(top.indices, torch.relu(top.values)) - residual).pow(2).mean()

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Rows of W_dec back to unit norm (after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


__all__ = ["TopKSAE"]
