"""Resizing rules of the original Broden build (docs/format.md, rule 7 "Planes").

Images are squashed to size x size (no crop) with a bilinear resize (PIL's, as the
original's ``imresize(..., 'bilinear')`` did). Label planes are shrunk with
``scipy.ndimage.zoom(order=0)`` on its default, corner-aligned grid: output index i
reads input index round(i * (n_in - 1) / (n_out - 1)), so a 10-pixel row 0..9 zoomed to
4 gives 0 3 6 9 (a centre-sampling resize would give 1 3 6 8). The original's own call
is kept (scipy) rather than rewritten, so its rounding is the original's too.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash an H x W x 3 uint8 image to size x size (no crop), bilinear."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """An H x W label plane shrunk (or grown) to size x size by ``scipy.ndimage.zoom(order=0)``.

    Corner-aligned: row i of the result is row round(i * (H - 1) / (size - 1)) of the input
    (likewise columns). Values are copied, never mixed; the dtype is kept.
    """
    from scipy.ndimage import zoom

    labels = np.asarray(labels)
    h, w = labels.shape
    if h == size and w == size:
        return labels
    out = zoom(labels, (size / h, size / w), order=0)
    if out.shape != (size, size):  # scipy rounds the output shape; never off for these factors, but be sure
        raise ValueError(f"zoom gave {out.shape} for a {h}x{w} plane, expected {size}x{size}")
    return out


def sampled_indices(n: int, size: int) -> np.ndarray:
    """The input indices :func:`resize_labels` reads along one axis of ``n`` pixels shrunk to ``size``.

    Order-0 zoom is separable, so one axis is computed with the very call resize_labels makes
    (an n x 2 index plane), never with a re-derived formula: its rounding is scipy's. Shape [size].
    """
    from scipy.ndimage import zoom

    if n == size:
        return np.arange(n)
    plane = np.repeat(np.arange(n, dtype=np.int64)[:, None], 2, axis=1)
    out = zoom(plane, (size / n, size / 2), order=0)
    if out.shape != (size, size):  # pragma: no cover (as in resize_labels)
        raise ValueError(f"zoom gave {out.shape} for {n} pixels, expected {size}")
    return out[:, 0]


def expand_sampled(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """A size x size plane, read at the pixels resize_labels samples, grown to height x width.

    Each native pixel copies the sample nearest to it, so ``resize_labels(expand_sampled(p, H, W),
    size)`` gives ``p`` back exactly (the sampled indices are distinct). Used where labels are only
    known at the sampled pixels (predictions of a segmentation model). Shapes [S, S] -> [H, W].
    """
    size = plane.shape[0]

    def nearest(n: int) -> np.ndarray:
        idx = sampled_indices(n, size)
        if n < size:  # a plane grown, not shrunk: read the samples back as resize_labels does
            return np.searchsorted(idx, np.arange(n), side="left").clip(0, size - 1)
        mid = (idx[1:] + idx[:-1]) / 2.0
        return np.searchsorted(mid, np.arange(n), side="left")

    return plane[np.ix_(nearest(height), nearest(width))]
