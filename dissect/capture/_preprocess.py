"""Which preprocessing a dissection uses, and the record of it.

Precedence, per setting (the first that says wins):

1. explicit settings: ``--input-size``/``--mean``/``--std`` (``input_size=``, ``mean=``, ``std=``
   in Python), or a ``transform=`` callable (Python only);
2. the model's own (dissect.capture._models.LoadedModel.preprocessing): mean/std of torchvision weights'
   ``transforms()``, timm's ``pretrained_cfg`` or a Hugging Face image processor; the input size
   of a model that only runs at one size (ViTs);
3. defaults: the store's image size, torchvision's ImageNet mean/std.

A ``transform`` gets each batch [B, 3, H, W] of RGB in [0, 1] (the store's images resized to the
input size) and returns the network input. It must keep the whole image (no crop): the
activation maps are compared with label masks of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from broden_builder.torch_dataset import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Preprocessing:
    """What the images go through: resize to ``input_size`` (H, W), then ``(x - mean) / std`` or
    ``transform(x)`` when a transform is given (then mean = 0, std = 1 are applied first)."""

    input_size: tuple
    mean: tuple
    std: tuple
    transform: Optional[Callable] = None
    record: dict = None  # for result.json "settings.preprocessing" and cache keys

    @property
    def dataset_mean(self) -> tuple:
        return (0.0, 0.0, 0.0) if self.transform is not None else self.mean

    @property
    def dataset_std(self) -> tuple:
        return (1.0, 1.0, 1.0) if self.transform is not None else self.std


def resolve_preprocessing(
    model_prep: Optional[dict],
    input_size=None,
    mean=None,
    std=None,
    transform: Optional[Callable] = None,
    store_size: Optional[tuple] = None,
) -> Preprocessing:
    """Preprocessing from explicit settings, then the model's (``model_prep``), then defaults."""
    mp = model_prep or {}
    sources = []
    if input_size:
        size, why = tuple(int(x) for x in input_size), "input size: given"
    elif mp.get("input_size"):
        size, why = tuple(int(x) for x in mp["input_size"]), "input size: the model's (it runs at that size only)"
    elif store_size:
        size, why = tuple(int(x) for x in store_size), "input size: the store's image size"
    else:
        size, why = (224, 224), "input size: 224 (default)"
    sources.append(why)
    m: tuple
    s: tuple
    if transform is not None:
        m, s = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        sources.append(f"transform: {transform!r} on RGB in [0, 1]")
    else:
        m, wm = _chosen(mean, mp, "mean", IMAGENET_MEAN)
        s, ws = _chosen(std, mp, "std", IMAGENET_STD)
        sources.append(f"mean: {wm}" + (f"; std: {ws}" if ws != wm else ""))
    m = tuple(float(x) for x in m)
    s = tuple(float(x) for x in s)
    record = {
        "input_size": list(size),
        "mean": list(m),
        "std": list(s),
        "transform": repr(transform) if transform is not None else None,
        "model": mp.get("source"),
        "chosen": "; ".join(sources),
        "resize": "whole image, bilinear (no crop: activation maps stay aligned with the labels)",
    }
    return Preprocessing(size, m, s, transform, record)


def _chosen(given, model_prep: dict, key: str, default) -> tuple:
    """(value, where it came from) of mean or std: given > the model's > ImageNet's."""
    if given is not None:
        return given, "given"
    if model_prep.get(key):
        return model_prep[key], model_prep.get("source", "the model's")
    return default, "ImageNet (default)"
