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
    """Read a C x C matrix (C = ``units``) from a .npy file as float64; raises BasisError.

    Nothing is unpickled: the .npy header is read first and an object array is refused by its
    dtype; an .npz archive, a text file, a matrix whose values overflow float32 (the
    activations' dtype) are each refused with their own message.
    """
    path = Path(path)
    if not path.is_file():
        raise BasisError(f"basis file {path} does not exist")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            if head[:2] == b"PK":
                raise BasisError(
                    f"{path}: is an .npz archive (a zip); a basis is one matrix saved with numpy.save as .npy"
                )
            if head != b"\x93NUMPY":
                raise BasisError(f"{path}: not a .npy file (no NUMPY header); save the matrix with numpy.save")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)  # the header only: nothing is unpickled
    except BasisError:
        raise
    except (ValueError, OSError, SyntaxError) as e:
        raise BasisError(f"{path}: not a readable .npy header ({e})") from None
    if dtype.hasobject or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise BasisError(f"{path}: basis has dtype {dtype}; expected real numbers (object arrays are never loaded)")
    if len(shape) != 2 or tuple(shape) != (units, units):
        raise BasisError(
            f"{path}: basis has shape {tuple(shape)}; the layer has {units} units, so it must be {units} x {units}"
        )
    try:
        m = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise BasisError(f"{path}: cannot read the matrix ({e})") from None
    m = m.astype(np.float64)
    if not np.isfinite(m).all():
        raise BasisError(f"{path}: basis holds NaN or inf")
    big = float(np.abs(m).max()) if m.size else 0.0
    if big > float(np.finfo(np.float32).max):
        raise BasisError(
            f"{path}: basis holds {big:.3g}, beyond float32 (the activations' dtype, max "
            f"{float(np.finfo(np.float32).max):.3g})"
        )
    return m


def describe(matrix: np.ndarray, seed: Optional[int] = None, path: Optional[Union[str, Path]] = None) -> dict:
    """What results record about a basis: kind, seed or file, sha256 of the float64 matrix,
    and how far it is from orthogonal (max |Q Q^T - I|)."""
    m = np.ascontiguousarray(matrix, dtype=np.float64)
    doc = {
        "kind": "rotate" if seed is not None else "file",
        "units": int(m.shape[0]),
        "sha256": hashlib.sha256(m.tobytes()).hexdigest(),
        "orthogonality_error": float(np.abs(m @ m.T - np.eye(m.shape[0])).max()),
    }
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
    out = torch.matmul(m, flat).reshape(acts.shape)
    if out.numel() and not _finite(out) and _finite(acts):  # the basis made them overflow: blame it
        big = float(matrix.abs().max())
        raise BasisError(
            f"the basis (largest |value| {big:.3g}) turns the layer's finite activations into inf or "
            f"NaN in {str(acts.dtype).replace('torch.', '')}; scale it down (an orthogonal basis has "
            f"values within [-1, 1])"
        )
    return out


def _finite(t: torch.Tensor) -> bool:
    lo, hi = torch.aminmax(t.detach())  # one reduction (see activations.check_finite)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


__all__ = ["random_orthogonal", "load_basis", "resolve_basis", "apply_basis", "describe", "BasisError"]
