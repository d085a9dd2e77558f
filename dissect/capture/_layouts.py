"""Layer layouts: how a captured tensor becomes the [B, U, h, w] maps that dissection scores.

- ``nchw``: [B, C, H, W] as is (convolutional networks);
- ``nhwc``: channels-last [B, H, W, C] (Swin, ConvNeXt's inner blocks, timm NHWC stages),
  permuted to [B, C, H, W];
- ``tokens``: transformer tokens [B, P + h*w, C] with P leading class/register tokens, which are
  dropped; the patch tokens are laid out on the h x w patch grid (row-major, as ViTs flatten
  their patch embedding) and permuted to [B, C, h, w];
- ``vector``: [B, C] becomes [B, C, 1, 1] (one value per image).

Detection (``detect_layout``), unless a layout is forced (``--layout``):

- 2-D: vector; 3-D: tokens; 4-D: nchw, except when dims 1-2 look like a feature grid of the
  input (an integer stride s with H/s, W/s within rounding of the convolution arithmetic) and
  dims 2-3 do not: then nhwc (e.g. [1, 56, 56, 96] for a 224 input).
- the patch grid and the number of leading tokens come from the model when it can tell
  (torchvision VisionTransformer: ``patch_size`` and one class token; timm: ``patch_embed``
  and ``num_prefix_tokens``; Hugging Face: ``config.patch_size``, a class token when the
  embeddings have ``cls_token``, plus ``config.num_register_tokens``) and the token count fits;
  otherwise (hierarchical models, exported programs) from the token count and the input size:
  the fewest leading tokens P of PREFIXES leaving a grid of integer stride. The source is recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..errors import DissectError

LAYOUTS = ("nchw", "nhwc", "tokens")
#: leading tokens tried when the model cannot tell: none, class, class + distillation (DeiT),
#: class + 4/8/16 registers (DINOv2 with registers, "Vision Transformers Need Registers")
PREFIXES = (0, 1, 2, 5, 9, 17)


class LayoutError(DissectError):
    """A layer output that cannot be laid out as [B, U, h, w]; the message says what to choose."""


@dataclass(frozen=True)
class Layout:
    """How one layer's tensor maps to [B, U, h, w]; ``source`` says how it was chosen."""

    kind: str  # 'nchw' | 'nhwc' | 'tokens' | 'vector'
    grid: Optional[tuple] = None  # tokens: (h, w) patch grid
    prefix: int = 0  # tokens: leading class/register tokens dropped
    source: str = "detected"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid) if self.grid else None
        return d

    def text(self) -> str:
        if self.kind == "tokens":
            return f"tokens {self.prefix}+{self.grid[0]}x{self.grid[1]}"
        return self.kind

    def apply(self, t: torch.Tensor, name: str = "layer") -> torch.Tensor:
        """[B, U, h, w] view/copy of ``t`` (shapes as in the module docstring)."""
        if self.kind == "vector":
            _need(t, 2, name, "vector [batch, units]")
            return t[:, :, None, None]
        if self.kind == "nchw":
            _need(t, 4, name, "nchw [batch, channels, height, width]")
            return t
        if self.kind == "nhwc":
            _need(t, 4, name, "nhwc [batch, height, width, channels]")
            return t.permute(0, 3, 1, 2)
        _need(t, 3, name, "tokens [batch, tokens, channels]")
        h, w = self.grid
        if t.shape[1] != self.prefix + h * w:
            raise LayoutError(
                f"layer {name!r}: {t.shape[1]} tokens do not match {self.prefix} leading + {h}x{w} patch tokens"
            )
        return t[:, self.prefix :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def _need(t: torch.Tensor, dims: int, name: str, what: str) -> None:
    if t.dim() != dims:
        raise LayoutError(f"layer {name!r} output has shape {tuple(t.shape)}; layout {what} needs {dims} dimensions")


def _grid_like(a: int, b: int, size: tuple) -> bool:
    """True when (a, b) can be the feature grid of an H x W input at one integer stride.

    A stride-s layer gives ceil(H/s) with padding ('same') and a little less without it
    (valid convolutions lose k - 1 pixels per layer), so a is allowed in [H/s - 4, ceil(H/s)].
    """
    H, W = size
    if a < 1 or b < 1:
        return False
    for s in range(1, max(H, W) + 1):
        if a > math.ceil(H / s) or b > math.ceil(W / s):
            break  # larger strides give smaller grids
        if a >= H / s - 4 and b >= W / s - 4:
            return True
    return False


def _model_grid(model, size: tuple) -> Optional[tuple]:
    """(h, w, prefix, source) of a ViT's patch tokens from the model itself, or None."""
    if model is None:
        return None
    H, W = size
    try:
        from torchvision.models.vision_transformer import VisionTransformer

        if isinstance(model, VisionTransformer):
            p = int(model.patch_size)
            return H // p, W // p, 1, f"torchvision VisionTransformer patch_size {p}, 1 class token"
    except ImportError:  # pragma: no cover
        pass
    pe = getattr(model, "patch_embed", None)
    if pe is not None and hasattr(model, "num_prefix_tokens") and hasattr(pe, "patch_size"):  # timm
        ps = pe.patch_size if isinstance(pe.patch_size, (tuple, list)) else (pe.patch_size, pe.patch_size)
        if hasattr(pe, "dynamic_feat_size") and getattr(pe, "dynamic_img_size", False):
            h, w = pe.dynamic_feat_size((H, W))
        else:
            h, w = H // int(ps[0]), W // int(ps[1])
        n = int(model.num_prefix_tokens)
        return int(h), int(w), n, f"timm patch_embed patch_size {tuple(int(x) for x in ps)}, {n} prefix token(s)"
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "patch_size", None) is not None:  # Hugging Face
        ps = cfg.patch_size if isinstance(cfg.patch_size, (tuple, list)) else (cfg.patch_size, cfg.patch_size)
        emb = getattr(model, "embeddings", None) or getattr(getattr(model, "vit", None), "embeddings", None)
        cls = 1 if emb is not None and getattr(emb, "cls_token", None) is not None else 0
        reg = int(getattr(cfg, "num_register_tokens", 0) or 0)
        return (
            H // int(ps[0]),
            W // int(ps[1]),
            cls + reg,
            f"Hugging Face config patch_size {tuple(int(x) for x in ps)}, {cls} class + {reg} register token(s)",
        )
    return None


def infer_token_grid(n_tokens: int, size: tuple) -> Optional[tuple]:
    """(h, w, prefix) with n_tokens = prefix + h*w for the fewest prefix tokens whose grid fits the
    H x W input at an integer stride (h = H/s, w = W/s exactly); None when none fits."""
    H, W = size
    for prefix in PREFIXES:
        m = n_tokens - prefix
        if m < 1:
            break
        for s in range(1, max(H, W) + 1):
            if H % s or W % s:
                continue
            if (H // s) * (W // s) == m:
                return H // s, W // s, prefix
            if (H // s) * (W // s) < m:
                break
    return None


def detect_layout(
    shape: tuple, input_size: tuple, model=None, force: Optional[str] = None, name: str = "layer"
) -> Layout:
    """The Layout of a captured tensor of ``shape`` (batch first) for an H x W input.

    ``force`` is a layout of LAYOUTS (``--layout``); a 2-D output is a vector whatever is forced.
    Raises LayoutError when the shape fits no layout (the message names the layer and the shape).
    """
    shape = tuple(int(s) for s in shape)
    size = tuple(int(s) for s in input_size)
    if force is not None and force not in LAYOUTS:
        raise LayoutError(f"unknown layout {force!r}; choose one of {', '.join(LAYOUTS)}")
    if len(shape) == 2:
        return Layout("vector", source="2-D output")
    if force in ("nchw", "nhwc"):
        if len(shape) != 4:
            raise LayoutError(f"layer {name!r} output has shape {shape}; layout {force} needs 4 dimensions")
        return Layout(force, source="forced (--layout)")
    if len(shape) == 3:
        n = shape[1]
        mg = _model_grid(model, size)
        if mg is not None and mg[2] + mg[0] * mg[1] == n:
            return Layout("tokens", (mg[0], mg[1]), mg[2], source=f"model: {mg[3]}")
        guess = infer_token_grid(n, size)
        if guess is None:
            raise LayoutError(
                f"layer {name!r} output has shape {shape}: its {n} tokens form no patch grid of the "
                f"{size[0]}x{size[1]} input (after {'/'.join(map(str, PREFIXES))} class/register tokens); "
                f"choose another layer or input size"
            )
        why = "forced (--layout), grid" if force == "tokens" else "3-D output, grid"
        return Layout("tokens", guess[:2], guess[2], source=f"{why} inferred from {n} tokens and the input size")
    if len(shape) == 4:
        if force == "tokens":
            raise LayoutError(f"layer {name!r} output has shape {shape}; layout tokens needs 3 dimensions")
        if not _grid_like(shape[2], shape[3], size) and _grid_like(shape[1], shape[2], size):
            return Layout("nhwc", source="detected: dims 1-2 form the feature grid")
        return Layout("nchw", source="detected")
    raise LayoutError(
        f"layer {name!r} output has shape {shape}; dissection needs [batch, units, h, w], "
        f"[batch, h, w, units], [batch, tokens, units] or [batch, units]"
    )
