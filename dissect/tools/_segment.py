"""Segment new images with a dissected layer's units: each unit's mask where it fires above T_k.

Example::

    from dissect import Dissection
    from dissect.tools import unit_masks, preprocess
    result = Dissection(model, ["layer4"], "broden1_224").run(out="out")
    res = result["layer4"]
    x = preprocess(rgb_images, size=224)                      # [B, 3, 224, 224], ImageNet-normalised
    top = [u["unit_index"] for u in res.detectors()[:5]]
    masks = unit_masks(model, "layer4", x, res.thresholds, units=top)   # bool [B, 5, 224, 224]
    names = [res.units[u]["label"] for u in top]
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from broden_builder.torch_dataset import IMAGENET_MEAN, IMAGENET_STD

from ..capture import feature_maps, plan_layers
from ..errors import DissectError, UnitRangeError
from ..stats.upsample import upsample


def preprocess(
    images: Sequence[np.ndarray], size: Union[int, tuple] = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> torch.Tensor:
    """H x W x 3 uint8 RGB arrays or PIL images -> [B, 3, size, size] float, squashed (bilinear) and
    normalised as the store's images. Read-only arrays (``np.asarray(pil_image)``) are copied, so
    torch warns about nothing. Raises DissectError for an image that is not H x W x 3."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    out = []
    for k, img in enumerate(images):
        if hasattr(img, "convert") and hasattr(img, "mode"):  # a PIL image
            img = img.convert("RGB")
        arr = np.array(img, dtype=np.uint8)  # a writable copy
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise DissectError(f"image {k}: expected H x W x 3 RGB, got shape {arr.shape}")
        t = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255)
        t = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        out.append((t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))
    return torch.stack(out)


def unit_masks(
    model: torch.nn.Module,
    layer: str,
    images: torch.Tensor,
    thresholds,
    units: Optional[Sequence[int]] = None,
    size: Optional[tuple] = None,
    mode: str = "bilinear",
    layout: Optional[str] = None,
) -> torch.Tensor:
    """Bool [B, len(units), H, W]: the layer's activation of each unit (0-based ``units``, all by default),
    upsampled (``mode``, with dissect.stats.upsample as the tally does; bilinear is align_corners=False) to
    ``size`` (default the input's H x W) and thresholded at
    ``thresholds[unit]`` (mask = act > T_k, as in dissection).

    ``layer`` is a selector as dissected (``layer4``, ``relu#2``, ``backbone:p2``); ``layout`` forces
    ``nchw``/``nhwc``/``tokens`` as ``--layout`` did (default: detected, as in the dissection)."""
    model = getattr(model, "module", model) if not isinstance(model, torch.nn.Module) else model
    plans = plan_layers(model, [layer], images[:1], layout=layout)
    acts = feature_maps(model, images, plans)[layer]
    thr = torch.as_tensor(np.asarray(thresholds), dtype=acts.dtype, device=acts.device)
    if thr.shape != (acts.shape[1],):
        raise DissectError(f"layer {layer!r} has {acts.shape[1]} units but {tuple(thr.shape)} thresholds were given")
    idx = torch.arange(acts.shape[1]) if units is None else torch.as_tensor(list(units), dtype=torch.long)
    if idx.numel() and (idx.min() < 0 or idx.max() >= acts.shape[1]):
        raise UnitRangeError(f"unit indices must lie in 0..{acts.shape[1] - 1}, got {idx.tolist()}")
    sel = acts[:, idx.to(acts.device)]
    size = tuple(size) if size is not None else tuple(images.shape[-2:])
    up = upsample(sel.float(), size, mode)  # the tally's upsampler: these are the masks it counts
    return up > thr[idx.to(acts.device)].float().view(1, -1, 1, 1)
