"""Sparse autoencoders (SAEs) on a layer: train one, load one, and dissect its features beside the units.

- :class:`SparseEncoder`: an SAE's encoder, [B, U, h, w] -> [B, F, h, w] (dissect.sae._encoder);
- :func:`load_sae`, :func:`save_sae`: this package's format and SAELens' (dissect.sae._io);
- :func:`train_sae`, :class:`TrainSettings`: top-k SAE training on streamed positions (dissect.sae._train).
"""

from ._encoder import ACTIVATIONS, SAEError, SparseEncoder
from ._io import FORMAT, INSTALL, load_sae, save_sae
from ._train import LIMITS as TRAIN_LIMITS
from ._train import TrainSettings, train_sae

__all__ = [
    "SparseEncoder",
    "SAEError",
    "ACTIVATIONS",
    "load_sae",
    "save_sae",
    "FORMAT",
    "INSTALL",
    "train_sae",
    "TrainSettings",
    "TRAIN_LIMITS",
]
