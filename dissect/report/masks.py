"""Unit masks drawn over images: threshold the upsampled activation map at the unit's T_k."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: Outline colour of the mask boundary (RGB).
OUTLINE = np.array([255, 230, 0], np.float32)


def upsample_map(act_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling (align_corners=False, as torch's F.interpolate) of an h x w map to height x width."""
    t = torch.as_tensor(np.asarray(act_map, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(int(height), int(width)), mode="bilinear", align_corners=False)[0, 0].numpy()


def unit_mask(act_map: np.ndarray, threshold: float, height: int, width: int) -> np.ndarray:
    """Boolean height x width mask: upsampled activation > threshold (the rule the tally uses)."""
    return upsample_map(act_map, height, width) > np.float32(threshold)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (or on the image border)."""
    pad = np.pad(mask, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return mask & ~inner


def overlay(rgb: np.ndarray, mask: np.ndarray, dim: float = 0.3) -> np.ndarray:
    """The image with everything outside ``mask`` dimmed towards grey and the mask's outline drawn."""
    img = rgb.astype(np.float32)
    out = np.where(mask[..., None], img, img * dim + 128.0 * (1 - dim) * 0.5)
    edge = _boundary(mask)
    out[edge] = OUTLINE
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def unit_strip(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], threshold: float,
               thumb: int = 112, gap: int = 2, background: int = 255) -> np.ndarray:
    """One row of thumbnails (``thumb`` px high): each image with its mask, computed at the image's own size.

    ``images`` are H x W x 3 uint8; ``maps[i]`` is the layer-resolution activation map of ``images[i]``.
    """
    tiles = []
    for rgb, act in zip(images, maps):
        h, w = rgb.shape[:2]
        comp = overlay(rgb, unit_mask(act, threshold, h, w))
        tw = max(1, round(w * thumb / h))
        tiles.append(np.asarray(Image.fromarray(comp).resize((tw, thumb), Image.BILINEAR)))
    if not tiles:
        return np.full((thumb, thumb, 3), background, np.uint8)
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    strip = np.full((thumb, width, 3), background, np.uint8)
    x = 0
    for t in tiles:
        strip[:, x:x + t.shape[1]] = t
        x += t.shape[1] + gap
    return strip
