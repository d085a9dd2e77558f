"""Image-text models loaded from local files: ``hf:FOLDER`` (transformers CLIP or SigLIP),
``open_clip:ARCH:CHECKPOINT`` (an open_clip architecture with a local checkpoint), or
``path/file.py:function`` returning an object with ``encode_image`` and ``encode_text``.

Every model becomes an :class:`ImageText`: ``encode_image(images)`` float [B, 3, H, W] RGB in
[0, 1] -> [B, D]; ``encode_text(words)`` list of T strings -> [T, D]; ``identity`` (spec, path,
sha256 of the weights: the embedding cache's key). Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import DissectError
from broden_builder.shared import file_sha256, import_user_file, missing_model_folder


@dataclass
class ImageText:
    """A loaded image-text model (module docstring)."""

    encode_image: Callable = field(repr=False)
    encode_text: Callable = field(repr=False)
    identity: dict = field(default_factory=dict)
    device: str = "cpu"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _features(out, attr: str) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    if isinstance(out, torch.Tensor):
        return out
    for key in (attr, "pooler_output"):
        v = getattr(out, key, None)
        if isinstance(v, torch.Tensor):
            return v
    raise DissectError(f"the image-text model returned {type(out).__name__} without {attr} or pooler_output")


def _prepare(x: torch.Tensor, size: dict, crop: Optional[dict], mean, std) -> torch.Tensor:
    """Resize (shortest edge, or height/width), centre-crop, normalise: the image processor's steps on a tensor."""
    h, w = x.shape[-2:]
    if "shortest_edge" in size:
        s = size["shortest_edge"] / min(h, w)
        target = (max(1, round(h * s)), max(1, round(w * s)))
    else:
        target = (int(size.get("height", h)), int(size.get("width", w)))
    x = F.interpolate(x, size=target, mode="bicubic", align_corners=False).clamp(0, 1) if target != (h, w) else x
    if crop:
        ch, cw = int(crop["height"]), int(crop["width"])
        top, left = max(0, (x.shape[-2] - ch) // 2), max(0, (x.shape[-1] - cw) // 2)
        x = x[..., top : top + ch, left : left + cw]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


def _hf(ref: str, device: str) -> ImageText:
    try:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
    except ImportError:
        raise DissectError(f"--clip hf:{ref} needs transformers (pip install 'broden-dissect[models]')") from None
    folder = Path(ref).expanduser()
    missing = missing_model_folder(ref)
    if missing is not None:
        raise DissectError(f"--clip hf:{ref}: folder {missing} not found")
    where = str(folder) if folder.is_dir() else ref
    try:
        model = AutoModel.from_pretrained(where, local_files_only=True).to(device).eval()
        ip = AutoImageProcessor.from_pretrained(where, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(where, local_files_only=True)
    except Exception as e:
        if not folder.is_dir():
            raise DissectError(
                f"--clip hf:{ref}: not a local folder nor in the local Hugging Face cache "
                "(nothing is downloaded here); "
                f'save it once where there is internet: python -c "from transformers import AutoModel, AutoProcessor; '
                f"AutoModel.from_pretrained('{ref}').save_pretrained('DIR'); "
                f"AutoProcessor.from_pretrained('{ref}').save_pretrained('DIR')\" and pass --clip hf:DIR"
            ) from None
        raise DissectError(f"--clip hf:{ref}: cannot load it ({_first_line(e)})") from None
    if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise DissectError(
            f"--clip hf:{ref}: not an image-text model (needs an image processor, a tokenizer "
            f"and get_image_features: CLIP, SigLIP, ...)"
        )
    size = dict(ip.size) if getattr(ip, "do_resize", True) else {}
    crop = dict(ip.crop_size) if getattr(ip, "do_center_crop", False) and getattr(ip, "crop_size", None) else None
    siglip = "siglip" in str(getattr(model.config, "model_type", ""))
    pad = {"padding": "max_length", "max_length": 64} if siglip else {"padding": True}

    def encode_image(x: torch.Tensor) -> torch.Tensor:
        return _features(
            model.get_image_features(pixel_values=_prepare(x.to(device), size, crop, ip.image_mean, ip.image_std)),
            "image_embeds",
        )

    def encode_text(words: list) -> torch.Tensor:
        t = tok(list(words), truncation=True, return_tensors="pt", **pad)
        return _features(model.get_text_features(**{k: v.to(device) for k, v in t.items()}), "text_embeds")

    digest = hashlib.sha256()
    for f in sorted(folder.glob("*")) if folder.is_dir() else []:
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"):
            digest.update(f.name.encode() + file_sha256(f).encode())
    identity = {
        "kind": "hf",
        "spec": f"hf:{ref}",
        "path": str(folder.resolve()) if folder.is_dir() else ref,
        "sha256": digest.hexdigest() if folder.is_dir() else getattr(model.config, "_commit_hash", None),
        "model_type": getattr(model.config, "model_type", None),
    }
    return ImageText(encode_image, encode_text, identity, device)


def _open_clip(arch: str, checkpoint: Path, device: str) -> ImageText:
    try:
        import open_clip
    except ImportError:
        raise DissectError(
            "--clip open_clip:... needs the open_clip_torch package (pip install open_clip_torch)"
        ) from None
    if not checkpoint.is_file():
        raise DissectError(f"--clip open_clip:{arch}: checkpoint {checkpoint} not found")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(checkpoint), device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:
        raise DissectError(f"--clip open_clip:{arch}:{checkpoint}: cannot load it ({_first_line(e)})") from None
    model.eval()
    size = model.visual.image_size
    size = {"height": size[0], "width": size[1]} if isinstance(size, (tuple, list)) else {"shortest_edge": size}
    crop = {
        "height": size.get("height", size.get("shortest_edge")),
        "width": size.get("width", size.get("shortest_edge")),
    }
    mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)

    def encode_image(x: torch.Tensor) -> torch.Tensor:
        return model.encode_image(_prepare(x.to(device), size, crop, mean, std))

    def encode_text(words: list) -> torch.Tensor:
        return model.encode_text(tokenizer(list(words)).to(device))

    identity = {
        "kind": "open_clip",
        "spec": f"open_clip:{arch}:{checkpoint}",
        "path": str(checkpoint.resolve()),
        "sha256": file_sha256(checkpoint),
        "arch": arch,
    }
    return ImageText(encode_image, encode_text, identity, device)


def _python(spec: str, device: str) -> ImageText:
    file, func = spec.rsplit(":", 1)
    path = Path(file).expanduser()
    if not path.is_file():
        raise DissectError(f"--clip {spec}: file {path} not found")
    try:
        obj = getattr(import_user_file(path, "_dissect_clip"), func)()
    except AttributeError:
        raise DissectError(f"--clip {spec}: {path} has no function {func!r}") from None
    except Exception as e:
        raise DissectError(f"--clip {spec}: cannot load it ({_first_line(e)})") from None
    if not (callable(getattr(obj, "encode_image", None)) and callable(getattr(obj, "encode_text", None))):
        raise DissectError(f"--clip {spec}: {func}() must return an object with encode_image and encode_text")
    identity = {
        "kind": "python",
        "spec": spec,
        "path": str(path.resolve()),
        "function": func,
        "sha256": file_sha256(path),
    }
    return ImageText(lambda x: obj.encode_image(x), lambda w: obj.encode_text(list(w)), identity, "cpu")


def load_image_text(spec: str, device: str = "cpu") -> ImageText:
    """The image-text model named by ``spec`` (module docstring); DissectError (one line) when it cannot be loaded."""
    spec = str(spec)
    if spec.startswith("hf:"):
        return _hf(spec[3:], device)
    if spec.startswith("open_clip:"):
        parts = spec.split(":", 2)
        if len(parts) != 3:
            raise DissectError(f"--clip {spec!r}: write open_clip:ARCH:CHECKPOINT (e.g. open_clip:ViT-B-32:model.bin)")
        return _open_clip(parts[1], Path(parts[2]).expanduser(), device)
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        return _python(spec, device)
    raise DissectError(f"--clip {spec!r}: expected hf:FOLDER, open_clip:ARCH:CHECKPOINT or path/file.py:function")


__all__ = ["ImageText", "load_image_text"]
