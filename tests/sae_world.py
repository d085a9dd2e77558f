"""A superposition world for SAE tests: K planted concepts mixed into U < K units by a random dictionary.

Each concept is a label of category "object" in a store written here (label planes at the
segmentation size, one layer per concept present, so concepts may overlap). The layer's
activations at each position are ``D @ z``: ``D`` [U, K] a random dictionary with unit-norm
columns, ``z`` [K] the amplitudes (uniform in [0.5, 1.5] per instance) of the concepts whose mask
covers the position, plus a little Gaussian noise. The activations have the segmentation size, so
no upsampling stands between them and the labels.
"""
from __future__ import annotations

import numpy as np

from broden_builder.store.reader import BrodenStore
from broden_builder.store.writer import LabelSpec, StoreWriter


def concept_masks(n: int, k: int, size: int, rng) -> np.ndarray:
    """bool [n, k, size, size]: concept c is a random rectangle (2-4 pixels a side) in about 15% of the images."""
    masks = np.zeros((n, k, size, size), bool)
    for i in range(n):
        for c in range(k):
            if rng.random() < 0.15:
                hh, ww = rng.integers(2, 5, size=2)
                y, x = rng.integers(0, size - hh + 1), rng.integers(0, size - ww + 1)
                masks[i, c, y:y + hh, x:x + ww] = True
    return masks


def build_world(root, n: int = 200, k: int = 40, units: int = 16, size: int = 12, seed: int = 0):
    """Write the store to ``root/store`` and the activations [n, units, size, size] to ``root/acts.npy``.
    Returns (store path, acts path, dictionary D [units, k], masks [n, k, size, size]), images in
    index.csv order.
    Label number c + 1 is concept c (named "concept{c:02d}")."""
    rng = np.random.default_rng(seed)
    masks = concept_masks(n, k, size, rng)
    D = rng.standard_normal((units, k))
    D /= np.linalg.norm(D, axis=0, keepdims=True)
    amp = rng.uniform(0.5, 1.5, size=(n, k, 1, 1)) * masks
    acts = np.einsum("uk,nkyx->nuyx", D, amp) + 0.01 * rng.standard_normal((n, units, size, size))
    w = StoreWriter(root / "store")
    rgb = np.full((2 * size, 2 * size, 3), 127, np.uint8)
    for i in range(n):
        layers = [(masks[i, c] * (c + 1)).astype(np.int32) for c in range(k) if masks[i, c].any()]
        w.write_row(f"w/{i:04d}.jpg", "train", rgb.shape[:2], (size, size), {"object": layers}, {}, rgb=rgb)
    w.finalize([LabelSpec(c + 1, f"concept{c:02d}") for c in range(k)], {"format": "broden"}, "superposition world\n")
    order = [int(r.image[2:6]) for r in BrodenStore(root / "store").rows]  # the writer orders rows by split key
    acts, masks = acts[order], masks[order]
    np.save(root / "acts.npy", acts.astype(np.float32))
    return root / "store", root / "acts.npy", D, masks
