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


class _SelectedPre(torch.autograd.Function):
    """pre[s, j] = xc[s] . W_enc[:, idx[s, j]] + b_enc[idx[s, j]] for the selected features only.

    The selection (top k, AuxK's top k_aux) is made on the dense pre-activations without gradient;
    the gradient flows only through the selected entries, so the backward pass touches S x k
    columns of W_enc instead of multiplying a dense [S, F] gradient (Gao et al. 2024 likewise
    exploit the sparsity in their kernels). Work tensors are [S, 32, U] at most (chunks of 32)."""

    @staticmethod
    def forward(ctx, xc, W_enc, b_enc, idx):
        ctx.save_for_backward(xc, W_enc, idx)
        out = torch.empty(idx.shape, dtype=xc.dtype, device=xc.device)
        for lo in range(0, idx.shape[1], 32):
            cols = W_enc.t()[idx[:, lo : lo + 32]]  # [S, j, U]
            out[:, lo : lo + 32] = torch.einsum("su,sju->sj", xc, cols)
        return out + b_enc[idx]

    @staticmethod
    def backward(ctx, g):
        xc, W_enc, idx = ctx.saved_tensors
        g = g.contiguous()
        grad_xc = F.embedding_bag(idx, W_enc.t().contiguous(), per_sample_weights=g, mode="sum")
        grad_wt = torch.zeros(W_enc.shape[1], W_enc.shape[0], dtype=xc.dtype, device=xc.device)
        for lo in range(0, idx.shape[1], 32):
            gi, ii = g[:, lo : lo + 32], idx[:, lo : lo + 32]
            grad_wt.index_add_(0, ii.reshape(-1), (gi[:, :, None] * xc[:, None, :]).reshape(-1, xc.shape[1]))
        grad_b = torch.zeros(W_enc.shape[1], dtype=xc.dtype, device=xc.device).index_add_(
            0, idx.reshape(-1), g.reshape(-1)
        )
        return grad_xc, grad_wt.t(), grad_b, None


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

    def selected(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The pre-activations [S, j] of features ``indices`` [S, j] (gradient through them only)."""
        return _SelectedPre.apply(x - self.b_pre, self.W_enc, self.b_enc, indices)

    def forward(self, x: torch.Tensor) -> tuple:
        """x [S, U] -> (pre [S, F] without gradient, indices [S, k] and values [S, k] (ReLU'd) of the
        code, x_hat [S, U])."""
        with torch.no_grad():
            pre = self.pre_activations(x)
        indices = torch.topk(pre, self.k, dim=1).indices
        values = torch.relu(self.selected(x, indices))
        return pre, indices, values, self.decode_sparse(indices, values) + self.b_pre

    def aux_loss(
        self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor, k_aux: int
    ) -> torch.Tensor:
        """AuxK: mean squared error of (x - x_hat) against the top ``k_aux`` dead features' decoding
        (``dead`` [F] bool); 0 without dead features. The residual is a constant (detached)."""
        n_dead = int(dead.sum())
        if n_dead == 0 or k_aux < 1:
            return x.new_zeros(())
        masked = pre.masked_fill(~dead, float("-inf"))
        indices = torch.topk(masked, min(k_aux, n_dead), dim=1).indices
        residual = (x - x_hat).detach()
        return (self.decode_sparse(indices, torch.relu(self.selected(x, indices))) - residual).pow(2).mean()

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Rows of W_dec back to unit norm (after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


__all__ = ["TopKSAE"]
