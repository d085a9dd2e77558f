"""The probe images (a store's rows, or a folder) and each unit's activation on them.

A unit's activation on an image is its feature map's spatial mean, as CLIP-Dissect summarises a
convolutional unit (average pooling); the result is [N, U] over the probe images in order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from ..errors import DissectError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ProbeImages:
    """Images in a fixed order: a store's rows (index.csv order) or a folder's files (sorted).

    ``image(i)`` -> H x W x 3 uint8 (folder images squashed to ``size`` x ``size`` so that they
    batch); ``key`` identifies the images for the embedding cache. Raises DissectError for an
    empty or missing folder.
    """

    def __init__(self, store=None, folder: Optional[str] = None, size: int = 224):
        self.store, self.size = store, int(size)
        if folder is not None:
            root = Path(folder)
            if not root.is_dir():
                raise DissectError(f"image folder {root} not found")
            self.files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not self.files:
                raise DissectError(f"image folder {root} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
            h = hashlib.sha256(f"folder|{self.size}".encode())
            for p in self.files:
                st = p.stat()
                h.update(f"|{p.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}".encode())
            self.key = h.hexdigest()
        elif store is not None:
            self.files = None
            self.key = hashlib.sha256(f"store|{store.fingerprint()}".encode()).hexdigest()
        else:
            raise DissectError("give the probe images: a store or an image folder")

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.store)

    def image(self, i: int) -> np.ndarray:
        if self.files is None:
            return self.store.load_image(i)
        from broden_builder.shared import resize_image
        from broden_builder.shared import load_image

        try:
            return resize_image(load_image(self.files[i]), self.size)
        except Exception as e:
            raise DissectError(f"{self.files[i]}: cannot read the image ({e})") from None

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Float [B, 3, H, W] RGB in [0, 1], in order."""
        for lo in range(0, len(self), batch_size):
            imgs = [self.image(i) for i in range(lo, min(len(self), lo + batch_size))]
            yield torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255.0)


def spatial_mean(maps: torch.Tensor, sae=None) -> torch.Tensor:
    """[B, U] means over the positions of ``maps`` [B, U, h, w] (or [B, U], one position); with ``sae``
    (a dissect.sae SparseEncoder), [B, F]: the SAE's features at every position, then their means
    (as ``dissect run --sae`` reads the layer: the encoder applied per position)."""
    maps = maps.float()
    if maps.ndim == 2:
        maps = maps[:, :, None, None]
    if sae is not None:
        maps = sae.encode_maps(maps)
    return maps.mean(dim=(2, 3))


def activations_summary(source, n_images: int, sae=None) -> torch.Tensor:
    """[N, U] spatial means of activations ([N, U, h, w] or [N, U]: array, tensor, .npy or .pt);
    with ``sae``, [N, F] means of its features (:func:`spatial_mean`)."""
    from ..engine import open_activations

    acts = open_activations(source)
    if acts.shape[0] != n_images:
        raise DissectError(
            f"{acts.origin}: {acts.shape[0]} rows of activations for {n_images} probe images "
            f"(one row per image, in index.csv order)"
        )
    out = [spatial_mean(torch.from_numpy(np.asarray(acts[lo : lo + 256])), sae) for lo in range(0, acts.shape[0], 256)]
    return torch.cat(out)


def model_summary(
    loaded,
    layer: str,
    probe: ProbeImages,
    input_size=None,
    mean=None,
    std=None,
    batch_size: int = 32,
    device: str = "cpu",
    quiet: bool = True,
    sae=None,
) -> tuple:
    """([N, U] spatial means of ``layer``'s feature maps over the probe images, preprocessing record).
    ``loaded``: a dissect.capture LoadedModel (its preprocessing applies unless given); ``sae``: a
    dissect.sae SparseEncoder of the layer: [N, F] means of its features instead (:func:`spatial_mean`)."""
    import torch.nn.functional as F
    from broden_builder.shared import progress

    from ..capture import feature_maps, plan_layers, resolve_preprocessing

    first = probe.image(0)
    prep = resolve_preprocessing(loaded.preprocessing, input_size, mean, std, store_size=first.shape[:2])
    module = loaded.module.to(device).eval()
    m = torch.tensor(prep.dataset_mean, device=device)[None, :, None, None]
    s = torch.tensor(prep.dataset_std, device=device)[None, :, None, None]
    plans, out = None, []
    n = (len(probe) + batch_size - 1) // batch_size
    with torch.no_grad():
        for x in progress(probe.batches(batch_size), quiet, total=n, desc="describe: activations", unit="batch"):
            x = x.to(device)
            if tuple(x.shape[-2:]) != tuple(prep.input_size):
                x = F.interpolate(x, size=tuple(prep.input_size), mode="bilinear", align_corners=False)
            x = (x - m) / s
            if prep.transform is not None:
                x = prep.transform(x)
            if plans is None:
                plans = plan_layers(module, [layer], x[:1])
            out.append(spatial_mean(feature_maps(module, x, plans)[layer], sae).cpu())
    return torch.cat(out), prep.record


__all__ = ["ProbeImages", "activations_summary", "model_summary", "spatial_mean"]
