"""The model input: images -> batches on the device -> the model's forward -> captured feature maps.

Pass 1 of ``dissect_model``, ``dissect explain --model`` (a layer's activations computed again) and
``dissect ablate`` (a classifier's forward over labelled images) use these, so the three see the
same pixels, batches and feature maps:

- :func:`batch_loader`: a DataLoader whose batches are :class:`Batch` dataclasses
  (``collate_batch``); :func:`image_batches` and :func:`label_batches` of store rows;
- :func:`loaded_model`: an ``nn.Module`` or ``LoadedModel`` as a ``LoadedModel``;
- :func:`plan_model`: each layer's plan from one forward pass of a zero image (dissect.capture._plan);
- :class:`ModelForward`: a batch's images -> {layer: [B, U, h, w]} on the device, the model's
  failures as one-line DissectErrors.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from broden_builder import BrodenStore
from broden_builder.torch_dataset import BrodenDataset, collate_broden

from ..capture import ForwardError, LoadedModel, feature_maps, plan_layers
from ..errors import DissectError
from ._activations import check_finite
from ._tally_batches import Batch

log = logging.getLogger(__name__)


def collate_batch(items: Sequence[dict]) -> Batch:
    """BrodenDataset items (or any {"index", "image", "label"?} items) -> one :class:`Batch`."""
    return Batch.collated(collate_broden(items))


def batch_loader(
    ds: Dataset, batch_size: int, workers: int, device: Optional[torch.device] = None, prefetch: Optional[int] = None
) -> DataLoader:
    """DataLoader of ``ds`` in order, ``batch_size`` items a batch collated into a :class:`Batch`,
    ``workers`` processes (``prefetch`` batches each, torch's default when None); pinned memory when
    the batches go to a CUDA ``device``."""
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_batch,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=(prefetch or 2) if workers else None,
    )


def image_batches(
    store: BrodenStore, rows: Sequence[int], input_size: tuple, mean, std, batch_size: int, workers: int, **kw
) -> DataLoader:
    """Batches of index.csv ``rows`` (in order): ``image`` float32 [B, 3, H, W], each store image
    resized to ``input_size`` (H, W; bilinear, whole image) and normalised ``(x - mean) / std``."""
    ds = BrodenDataset(store, rows=list(rows), image_size=input_size, mean=mean, std=std, with_labels=False)
    return batch_loader(ds, batch_size, workers, **kw)


def label_batches(
    store: BrodenStore, rows: Sequence[int], categories: Sequence[str], batch_size: int, workers: int
) -> DataLoader:
    """Batches of index.csv ``rows`` (in order): ``seg``, the label planes of ``categories``."""
    ds = BrodenDataset(store, categories=categories, rows=list(rows), with_images=False)
    return batch_loader(ds, batch_size, workers)


def loaded_model(model) -> LoadedModel:
    """``model`` as a LoadedModel (an nn.Module or TorchScript module wrapped as it is). Raises
    DissectError for anything else."""
    if isinstance(model, LoadedModel):
        return model
    if not isinstance(model, nn.Module):
        raise DissectError(f"model must be an nn.Module or LoadedModel, got {type(model).__name__}")
    kind = "torchscript" if isinstance(model, torch.jit.ScriptModule) else "module"
    return LoadedModel(model, type(model).__name__, kind)


def plan_model(
    lm: LoadedModel,
    names: Sequence[str],
    input_size: tuple,
    device,
    layout=None,
    transform: Optional[Callable] = None,
    say: bool = True,
) -> dict:
    """{layer: LayerPlan} from one full forward pass of a zero image [1, 3, H, W] (``input_size``,
    after ``transform`` when given) on ``device`` (dissect.capture._plan): selector, call count,
    output structure, layout and (U, h, w). Only a failure of the model's own forward pass is
    reported as a problem of the input size (DissectError); selectors, call counts and layouts
    raise their own errors, which say what to choose."""
    if lm.random_weights and say:
        log.warning("model %s has %s", lm.spec, lm.weights_text())
    with torch.no_grad():
        x = torch.zeros(1, 3, *input_size, device=device)
        x = transform(x) if transform is not None else x
    try:
        return plan_layers(lm.module, names, x, layout=layout)
    except ForwardError as e:
        raise DissectError(
            f"model {lm.spec} fails on input size {input_size[0]}x{input_size[1]}: {e} (choose another --input-size)"
        ) from None


class ModelForward:
    """A batch's images -> {layer: float [B, U, h, w]} on ``device``: the images moved there,
    ``transform`` applied (when given), one forward pass of ``lm`` capturing the ``plans``' tensors
    laid out as maps (dissect.capture.feature_maps). A failing forward pass raises DissectError
    naming the model, the batch size and ``input_size``."""

    def __init__(self, lm: LoadedModel, plans: dict, device, input_size: tuple, transform: Optional[Callable] = None):
        self.lm, self.plans, self.device = lm, plans, device
        self.input_size, self.transform = tuple(input_size), transform

    def __call__(self, batch: Batch) -> dict:
        x = batch.image.to(self.device, non_blocking=True)
        if self.transform is not None:
            with torch.no_grad():
                x = self.transform(x)
        try:
            return feature_maps(self.lm.module, x, self.plans)
        except ForwardError as e:
            h, w = self.input_size
            raise DissectError(
                f"model {self.lm.spec} fails on a batch of {x.shape[0]} images at input size {h}x{w}: {e}"
            ) from None


def cache_rounded(layer: str, a: torch.Tensor, dtype: torch.dtype, rows: Sequence[int], store: BrodenStore):
    """Feature maps ``a`` [B, U, h, w] of index.csv ``rows`` rounded to the activation cache's
    ``dtype`` (what pass 1's statistics and pass 2's tally see). Raises DissectError for a value
    that is not finite (naming the row) or beyond float16's range when ``dtype`` is float16."""
    check_finite(layer, a, list(rows), store)
    # finite values overflow float16 exactly when |a| >= 65520 (they round to inf); checked on
    # the float32 values, which is cheaper than isfinite on float16 on a CPU
    if dtype == torch.float16 and a.numel() and float(a.abs().amax()) >= 65520.0:
        raise DissectError(
            f"layer {layer!r}: activations exceed the float16 range of the cache "
            f"(max |a| = {a.abs().max().item():.4g}); use --cache-dtype float32"
        )
    return a.to(dtype)
