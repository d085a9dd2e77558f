"""Segmentation models loaded from local files: ``hf:FOLDER``, ``torchvision:NAME:CHECKPOINT``,
``path/file.py:function``.

Every model becomes a :class:`Segmenter`: ``classes`` (C names, class index order), ``exclusive``
(one class per pixel: softmax models), ``identity`` (what build.json records: path, sha256 of
the weights, config) and ``scores(images)``: float [B, 3, H, W] RGB in [0, 1] on the model's
device -> confidences [B, C, h, w]. Nothing is downloaded: a Hugging Face hub id works only when
it is already in the local cache, otherwise the error says how to save the model once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..base import SourceDataError, SourceMissingError
from ...userfiles import file_sha256, import_user_file, missing_model_folder

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Segmenter:
    """A loaded segmentation model (module docstring)."""

    classes: list
    exclusive: bool
    identity: dict
    forward: Callable = field(repr=False)
    device: str = "cpu"

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] float RGB in [0, 1] -> [B, C, h, w] float confidences (no gradient)."""
        with torch.inference_mode():
            return self.forward(images.to(self.device))



def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


def _resize_to(x: torch.Tensor, size: Optional[dict]) -> torch.Tensor:
    """Resize as an image processor's ``size`` says: {height, width} or {shortest_edge}; else unchanged."""
    import torch.nn.functional as F

    size = size or {}
    h, w = x.shape[-2:]
    if "height" in size and "width" in size:
        target = (int(size["height"]), int(size["width"]))
    elif "shortest_edge" in size:
        s = int(size["shortest_edge"]) / min(h, w)
        target = (max(1, round(h * s)), max(1, round(w * s)))
    else:
        return x
    return x if target == (h, w) else F.interpolate(x, size=target, mode="bilinear", align_corners=False)


def load_segmenter(spec: str, device: str = "cpu") -> Segmenter:
    """The Segmenter named by ``spec`` (module docstring), on ``device``.

    Raises SourceMissingError (a file or folder is absent, a hub id not cached) and
    SourceDataError (the file is not such a model), each one line naming the spec.
    """
    spec = str(spec)
    if spec.startswith("hf:"):
        return _hf_segmenter(spec[3:], device)
    if spec.startswith("torchvision:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SourceDataError(f"model {spec!r}: write torchvision:NAME:CHECKPOINT (e.g. "
                                  f"torchvision:deeplabv3_resnet50:weights.pth)")
        return _torchvision_segmenter(parts[1], Path(parts[2]).expanduser(), device)
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        return _python_segmenter(spec, device)
    raise SourceDataError(f"model {spec!r}: expected hf:FOLDER, torchvision:NAME:CHECKPOINT or path/file.py:function")


def _python_segmenter(spec: str, device: str) -> Segmenter:
    file, func = spec.rsplit(":", 1)
    path = Path(file).expanduser()
    if not path.is_file():
        raise SourceMissingError(f"model {spec!r}: file {path} not found")
    try:
        obj = getattr(import_user_file(path, "_broden_segmenter"), func)()
    except AttributeError:
        raise SourceDataError(f"model {spec!r}: {path} has no function {func!r}") from None
    except Exception as e:
        raise SourceDataError(f"model {spec!r}: cannot load it ({_first_line(e)})") from None
    classes = getattr(obj, "classes", None)
    if not callable(obj) or classes is None:
        raise SourceDataError(f"model {spec!r}: {func}() must return a callable object with a 'classes' list")
    if hasattr(obj, "to"):
        obj = obj.to(device)
    if hasattr(obj, "eval"):
        obj.eval()
    identity = {"kind": "python", "spec": spec, "path": str(path.resolve()), "function": func,
                "sha256": file_sha256(path), "config": dict(getattr(obj, "config", {}) or {})}
    return Segmenter(list(classes), bool(getattr(obj, "exclusive", False)), identity, lambda x: obj(x).float(), device)


def _hf_files_digest(folder: Path) -> str:
    """sha256 of the folder's weights: of the one weights file, else over every weights file (name and content, sorted)."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in (".safetensors", ".bin"))
    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def _hf_not_local(ref: str) -> SourceMissingError:
    return SourceMissingError(
        f"model hf:{ref}: not a local folder nor in the local Hugging Face cache (nothing is downloaded here); "
        f"save it once where there is internet: python -c \"from transformers import AutoModelForSemanticSegmentation "
        f"as M, AutoImageProcessor as P; M.from_pretrained('{ref}').save_pretrained('DIR'); "
        f"P.from_pretrained('{ref}').save_pretrained('DIR')\" and write model: hf:DIR")


def _hf_load(ref: str):
    """(config, module, image processor size, mean, std) of a local folder or a cached hub id."""
    import transformers
    from transformers import AutoConfig

    folder = Path(ref).expanduser()
    missing = missing_model_folder(ref)
    if missing is not None:
        raise SourceMissingError(f"model hf:{ref}: folder {missing} not found")
    where = str(folder) if folder.is_dir() else ref
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=True)
    except Exception as e:
        if folder.is_dir():
            raise SourceDataError(f"model hf:{ref}: cannot read its config ({_first_line(e)})") from None
        raise _hf_not_local(ref) from None
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    cls = cls or transformers.AutoModelForSemanticSegmentation
    try:
        module = cls.from_pretrained(where, local_files_only=True)
    except Exception as e:
        raise SourceDataError(f"model hf:{ref}: cannot load it as {cls.__name__} ({_first_line(e)})") from None
    size, mean, std = None, IMAGENET_MEAN, IMAGENET_STD
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(where, local_files_only=True)
        size = dict(getattr(proc, "size", None) or {}) if getattr(proc, "do_resize", True) else None
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:  # no preprocessor_config.json: the whole image, ImageNet mean/std
        pass
    return where, config, module, size, mean, std


def _hf_forward(module, size, mean, std) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = module(pixel_values=_normalize(_resize_to(x, size), mean, std))
        logits = getattr(out, "logits", None)
        if logits is not None and logits.ndim == 4:
            return logits.float().softmax(dim=1)
        cq, mq = getattr(out, "class_queries_logits", None), getattr(out, "masks_queries_logits", None)
        if cq is None or mq is None:
            raise SourceDataError(f"{type(module).__name__} gives neither semantic logits nor mask queries")
        # the semantic map of mask-classification models (MaskFormer, Mask2Former), as their
        # post_process_semantic_segmentation computes it: class probabilities (no 'null' class) x mask probabilities
        return torch.einsum("bqc,bqhw->bchw", cq.float().softmax(dim=-1)[..., :-1], mq.float().sigmoid())
    return forward


def _hf_segmenter(ref: str, device: str) -> Segmenter:
    where, config, module, size, mean, std = _hf_load(ref)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise SourceDataError(f"model hf:{ref}: id2label must number the classes 0..C-1, got {sorted(id2label)[:8]}")
    classes = [id2label[k] for k in range(len(id2label))]
    folder = Path(where)
    identity = {"kind": "hf", "spec": f"hf:{ref}", "path": str(folder.resolve()) if folder.is_dir() else ref,
                "sha256": _hf_files_digest(folder) if folder.is_dir() else getattr(config, "_commit_hash", None),
                "config": {"config_sha256": file_sha256(folder / "config.json") if folder.is_dir() else None,
                           "model_type": config.model_type, "architectures": getattr(config, "architectures", None),
                           "num_labels": len(classes), "image_size": size, "mean": list(mean), "std": list(std)}}
    module = module.to(device).eval()
    return Segmenter(classes, True, identity, _hf_forward(module, size, mean, std), device)


def _torchvision_segmenter(name: str, checkpoint: Path, device: str) -> Segmenter:
    import torchvision

    if not checkpoint.is_file():
        raise SourceMissingError(f"model torchvision:{name}: checkpoint {checkpoint} not found")
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except Exception:
        raise SourceDataError(f"model torchvision:{name}: not a torchvision segmentation model "
                              f"(e.g. deeplabv3_resnet50, fcn_resnet50, lraspp_mobilenet_v3_large)") from None
    classes = list(weights.meta.get("categories") or [])
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        aux = any(k.startswith("aux_classifier.") for k in state)
        module = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=len(classes),
                                              aux_loss=aux)
        module.load_state_dict(state)
    except Exception as e:
        raise SourceDataError(f"model torchvision:{name}: checkpoint {checkpoint} does not load ({_first_line(e)})") from None
    module = module.to(device).eval()
    resize = getattr(weights.transforms(), "resize_size", None)
    size = {"shortest_edge": resize[0] if isinstance(resize, (list, tuple)) else resize} if resize else None

    def forward(x: torch.Tensor) -> torch.Tensor:
        return module(_normalize(_resize_to(x, size), IMAGENET_MEAN, IMAGENET_STD))["out"].float().softmax(dim=1)

    identity = {"kind": "torchvision", "spec": f"torchvision:{name}:{checkpoint}", "path": str(checkpoint.resolve()),
                "sha256": file_sha256(checkpoint), "config": {"name": name, "torchvision": torchvision.__version__,
                                                              "image_size": size, "num_classes": len(classes)}}
    return Segmenter(classes, True, identity, forward, device)


def check_output(seg: Segmenter, scores: Any, batch: int, where: str) -> None:
    """Refuse scores that are not [batch, C, h, w] with C the number of class names."""
    C = len(seg.classes)
    if not isinstance(scores, torch.Tensor) or scores.ndim != 4 or scores.shape[0] != batch or scores.shape[1] != C \
            or scores.shape[2] < 1 or scores.shape[3] < 1:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise SourceDataError(f"{where}: the model returned {shape}, expected [{batch}, {C}, h, w] "
                              f"(batch, one score map per class name, {C} names)")


__all__ = ["Segmenter", "load_segmenter", "check_output", "file_sha256"]
