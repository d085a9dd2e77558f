"""A change of basis of a layer's units before thresholds (Bau et al., CVPR 2017, section 3.2).

Network Dissection's rotation baseline: the representation multiplied by a random orthogonal
matrix Q keeps all its information and its discriminative power but, if interpretability is
axis-aligned, loses most of its unique detectors. Unit i of the rotated layer is
``a'_i = sum_j Q[i, j] a_j`` at every position.

``random_orthogonal(n, seed)`` is the QR decomposition of a seeded standard Gaussian matrix with
the signs fixed so that R has a positive diagonal (Q is then Haar-distributed; Mezzadri, "How
to generate random matrices from the classical compact groups", Notices AMS 2007).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..errors import DissectError


class BasisError(DissectError):
    """A basis file that cannot be used (the message names the file and the problem)."""


def random_orthogonal(n: int, seed: int) -> np.ndarray:
    """float64 [n, n] orthogonal matrix from numpy's default_rng(seed)."""
    if n < 1:
        raise BasisError(f"a basis needs n >= 1 units, got {n}")
    g = np.random.default_rng(int(seed)).standard_normal((n, n))
    q, r = np.linalg.qr(g)
    return q * np.sign(np.diag(r))[None, :]


def load_basis(path: Union[str, Path], units: int) -> np.ndarray:
    """Read a C x C matrix (C = ``units``) from a .npy file as float64; raises BasisError."""
    path = Path(path)
    if not path.is_file():
        raise BasisError(f"basis file {path} does not exist")
    try:
        m = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise BasisError(f"{path}: not a .npy array ({e})") from None
    if m.ndim != 2 or m.shape != (units, units):
        raise BasisError(f"{path}: basis has shape {m.shape}; the layer has {units} units, so it must be "
                         f"{units} x {units}")
    if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m):
        raise BasisError(f"{path}: basis has dtype {m.dtype}; expected real numbers")
    m = m.astype(np.float64)
    if not np.isfinite(m).all():
        raise BasisError(f"{path}: basis holds NaN or inf")
    return m


def describe(matrix: np.ndarray, seed: Optional[int] = None, path: Optional[Union[str, Path]] = None) -> dict:
    """What results record about a basis: kind, seed or file, sha256 of the float64 matrix,
    and how far it is from orthogonal (max |Q Q^T - I|)."""
    m = np.ascontiguousarray(matrix, dtype=np.float64)
    doc = {"kind": "rotate" if seed is not None else "file", "units": int(m.shape[0]),
           "sha256": hashlib.sha256(m.tobytes()).hexdigest(),
           "orthogonality_error": float(np.abs(m @ m.T - np.eye(m.shape[0])).max())}
    if seed is not None:
        doc["seed"] = int(seed)
    if path is not None:
        doc["file"] = str(Path(path).resolve())
    return doc


def resolve_basis(units: int, rotate: Optional[int] = None, basis: Optional[Union[str, Path]] = None) -> tuple:
    """(matrix float64 [U, U] or None, record dict or None) for --rotate SEED / --basis FILE."""
    if rotate is not None and basis is not None:
        raise BasisError("give --rotate SEED or --basis FILE, not both")
    if rotate is not None:
        m = random_orthogonal(units, rotate)
        return m, describe(m, seed=rotate)
    if basis is not None:
        m = load_basis(basis, units)
        return m, describe(m, path=basis)
    return None, None


def apply_basis(acts: torch.Tensor, matrix: Optional[torch.Tensor]) -> torch.Tensor:
    """acts [B, U, ...] -> [B, U, ...] with unit i = sum_j matrix[i, j] * unit j (same dtype).
    ``matrix`` None returns ``acts`` unchanged."""
    if matrix is None:
        return acts
    if acts.shape[1] != matrix.shape[1]:
        raise BasisError(f"basis is {tuple(matrix.shape)} but the activations have {acts.shape[1]} units")
    m = matrix.to(acts.device, acts.dtype)
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
    return torch.matmul(m, flat).reshape(acts.shape)


__all__ = ["random_orthogonal", "load_basis", "resolve_basis", "apply_basis", "describe", "BasisError"]
