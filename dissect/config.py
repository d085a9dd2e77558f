"""The settings of one dissection: a frozen, validated :class:`DissectConfig`.

Invalid values are refused when the config is made (``DissectConfig(upsample="cubic")`` raises
DissectError), never after a pass over the images. The ``dissect`` CLI takes its option choices
and defaults from the fields here (see :func:`default`), so they cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from .errors import DissectError
from .capture import LAYOUTS
from .stats.tally import UNIONS
from .stats.upsample import MODES

#: Activation upsampling modes of a dissection ('field' needs receptive-field offsets, so it is an
#: option of dissect.stats.upsample only).
UPSAMPLE_MODES = tuple(m for m in MODES if m != "field")
CACHE_DTYPES = ("float16", "float32")


#: most DataLoader worker processes a setting may ask for (dissect run --workers)
MAX_WORKERS_ALLOWED = 64

@dataclass(frozen=True)
class DissectConfig:
    """Settings of one dissection (no global state). Sizes are (H, W). Raises DissectError when invalid."""

    quantile: float = 0.005
    iou_threshold: float = 0.04
    union: str = "original"  # one of UNIONS
    categories: Optional[tuple] = None  # None = every category of the store
    top_k: int = 10
    split: Optional[str] = None
    input_size: Optional[tuple] = None  # None = the model's fixed input size, else the store's image size
    mean: Optional[tuple] = None  # None = the model's preprocessing, else ImageNet's (dissect.capture._preprocess)
    std: Optional[tuple] = None
    upsample: str = "bilinear"  # one of UPSAMPLE_MODES
    batch_size: int = 32
    workers: Optional[int] = None  # DataLoader workers; None = chosen by dissect.engine._resources
    threads: Optional[int] = None  # torch intra-op threads of the statistics; None = 1 (dissect.engine._resources)
    device: str = "auto"  # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    checkpoint_every: int = 50  # batches; 0 = never
    cache_dtype: str = "float16"  # activations are rounded to this before every statistic
    quantile_memory: int = 1 << 30  # bytes the exact quantile may keep before it switches to histogram passes
    cache_dir: Optional[str] = None  # None = out/.dissect_cache (removed after success)
    keep_cache: bool = False
    quiet: bool = False
    layout: Optional[str] = None  # force 'nchw' | 'nhwc' | 'tokens' for every layer (None = detected per layer)
    transform: Optional[object] = None  # callable on [B, 3, H, W] RGB in [0, 1] -> network input (no crop)
    rotate: Optional[int] = None  # seed of a random orthogonal basis applied to the units (dissect.engine._basis)
    basis: Optional[str] = None  # a C x C .npy matrix applied to the units instead

    def __post_init__(self):
        # `not (a <= x <= b)` also refuses NaN, which would otherwise run both passes and fail
        # only when result.json is written (or score every unit as a detector / none).
        if not 0 < self.quantile < 1:
            raise DissectError(f"quantile must lie in (0, 1), got {self.quantile}")
        if not 0 <= self.iou_threshold <= 1:
            raise DissectError(f"iou_threshold must lie in [0, 1] (an IoU), got {self.iou_threshold}")
        for name in ("mean", "std"):
            if getattr(self, name) is not None and not all(math.isfinite(float(v)) for v in getattr(self, name)):
                raise DissectError(f"{name} must be finite numbers, got {tuple(getattr(self, name))}")
        for name, choices in (("union", UNIONS), ("upsample", UPSAMPLE_MODES), ("cache_dtype", CACHE_DTYPES)):
            if getattr(self, name) not in choices:
                raise DissectError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.top_k < 1 or self.batch_size < 1 or (self.workers is not None and self.workers < 0) or self.checkpoint_every < 0:
            raise DissectError("top_k and batch_size must be >= 1, workers and checkpoint_every >= 0")
        if self.workers is not None and self.workers > MAX_WORKERS_ALLOWED:  # each is a process: bounded (issue 25)
            raise DissectError(f"workers must be at most {MAX_WORKERS_ALLOWED} (each is a process), got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise DissectError(f"threads must be >= 1, got {self.threads}")
        if self.quantile_memory < 1:
            raise DissectError(f"quantile_memory must be >= 1 byte, got {self.quantile_memory}")
        if self.rotate is not None and self.basis is not None:
            raise DissectError("give rotate (a seed) or basis (a .npy file), not both")
        if self.rotate is not None and (isinstance(self.rotate, bool) or not isinstance(self.rotate, int)):
            raise DissectError(f"rotate must be an integer seed, got {self.rotate!r}")
        if isinstance(self.input_size, int):
            object.__setattr__(self, "input_size", (self.input_size, self.input_size))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(self.categories))
        if self.layout is not None and self.layout not in LAYOUTS:
            raise DissectError(f"layout must be one of {LAYOUTS} (or None to detect), got {self.layout!r}")
        if self.transform is not None and not callable(self.transform):
            raise DissectError(f"transform must be callable, got {type(self.transform).__name__}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))

    def replace(self, **changes) -> "DissectConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def default(name: str):
    """The default value of field ``name`` (the CLI's option defaults come from here)."""
    f = DissectConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
