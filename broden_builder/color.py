"""Per-pixel colour names from the van de Weijer et al. (2009) table (see data/ATTRIBUTION.md)."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

#: The 11 colour names, in the table's order (table value v names COLOR_NAMES[v]).
COLOR_NAMES = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white", "yellow")


@lru_cache(maxsize=1)
def color_table() -> np.ndarray:
    """The 32 x 32 x 32 uint8 lookup, index [R // 8, G // 8, B // 8] -> 0..10."""
    with resources.files("broden_builder").joinpath("data/w2color.npy").open("rb") as f:
        table = np.load(f)
    if table.shape != (32, 32, 32):
        raise ValueError(f"w2color.npy has shape {table.shape}, expected (32, 32, 32)")
    return table


def color_codes(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W uint8 codes 1..11 (code k names COLOR_NAMES[k - 1])."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {rgb.shape}")
    q = (rgb[..., :3] >> 3).astype(np.intp)
    return color_table()[q[..., 0], q[..., 1], q[..., 2]] + 1


def color_vocabulary() -> dict:
    """{code: (name,)} for the colour category (names without the '-c' suffix; the unifier adds it)."""
    return {i + 1: (name,) for i, name in enumerate(COLOR_NAMES)}
