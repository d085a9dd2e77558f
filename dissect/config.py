"""The settings of one dissection: a frozen, validated :class:`DissectConfig`, each setting declared once.

Invalid values are refused when the config is made (``DissectConfig(upsample="cubic")`` raises
DissectError), never after a pass over the images. Each field is declared with :func:`setting`:
its default, its help text and the commands that offer it. From the fields alone come

- the ``dissect`` CLI's options (``--iou-threshold`` from ``iou_threshold``; dissect.cli),
- the settings a result records in ``result.json`` and the checkpoint key a resume must match
  (:func:`recorded`: every field but :data:`RUNTIME_ONLY` and those the engine records resolved).

So adding a setting is one ``setting(...)`` line here (tests/test_config_fields.py checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .errors import DissectError
from .capture import LAYOUTS
from .stats.pvalues import DETECTORS
from .stats.tally import UNIONS
from .sae import TRAIN_LIMITS as _SAE_LIMITS
from .stats.upsample import MODES

#: Activation upsampling modes of a dissection ('field' needs receptive-field offsets, so it is an
#: option of dissect.stats.upsample only).
UPSAMPLE_MODES = tuple(m for m in MODES if m != "field")
CACHE_DTYPES = ("float16", "float32")

#: The commands that dissect (their options are the settings), and those that prepare images.
DISSECTION = ("run", "score", "explain")
PREPROCESSING = ("run", "explain", "ablate", "describe")

#: Fields that change how a run works, never what it computes: not recorded in result.json's
#: settings (the engine records the parallelism it chose) and not part of the checkpoint key.
RUNTIME_ONLY = (
    "workers",
    "threads",
    "device",
    "checkpoint_every",
    "quantile_memory",
    "cache_dir",
    "keep_cache",
    "quiet",
    "label_cache",
    "progress",
)


def floats3(text: str) -> tuple:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5): an R,G,B triple written on the command line."""
    try:
        vals = tuple(float(x) for x in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text!r}")
    return vals


#: bounds of the values that size what the program allocates or spawns: beyond them a
#: value is a slip, refused at once (a usage error on the command line, DissectError from the API)
#: instead of exhausting memory or processes
LIMITS = {
    "input_size": 8192,
    "workers": 64,
    "batch_size": 65536,
    "threads": 1024,
    "top_k": 10000,
    "length": 16,
    "beam": 1024,
    "k": 100000,
    "thumb": 4096,
    "images": 10000,
    "null": 100000,
    "seed": 2**63 - 1,
    # dissect sae train: features, chunk_mb, epochs, checkpoint_every (the memory of a training is
    # also checked against the memory available before it starts: dissect.sae._train.check_memory)
    **{k: v for k, v in _SAE_LIMITS.items() if k != "batch_size"},
}


def bounded(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must lie in {lo}..{hi}, got {text}")
        return v

    return parse


def size(text: str) -> tuple:
    """``"224"`` -> (224, 224), ``"48x64"`` -> (48, 64): an image size (H, W) written on the command line."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW with positive sizes, got {text!r}")
    if max(vals) > LIMITS["input_size"]:
        raise argparse.ArgumentTypeError(f"sizes must be at most {LIMITS['input_size']} pixels, got {text!r}")
    return vals


def categories_of(values: Optional[Sequence[str]]) -> Optional[tuple]:
    """Repeated ``--categories A,B`` values -> (A, B, ...); none given -> None (every category)."""
    if not values:
        return None
    out: list = []
    for v in values:
        out += [c.strip() for c in v.split(",") if c.strip()]
    return tuple(out)


def setting(
    default,
    help: str,
    *,
    cli: Sequence[str] = DISSECTION,
    type: Optional[Callable] = None,
    choices: Optional[Sequence] = None,
    metavar: Optional[str] = None,
    action: Optional[Union[str, type]] = None,
    collect: Optional[Callable] = None,
    resolved: Optional[str] = None,
):
    """A DissectConfig field declared once.

    ``help``: the CLI help (``{default}`` is replaced by the default). ``cli``: the commands that
    offer it as ``--name-with-dashes`` (() = Python only). ``type``/``choices``/``metavar``/
    ``action``: argparse's, when the field's type does not say it (a bool is a store_true flag).
    ``collect``: turns the parsed CLI value into the field's value. ``resolved``: where the engine
    records this setting's resolved value instead of recording it as given (not in :func:`recorded`).
    """
    meta = {
        "help": help,
        "cli": tuple(cli),
        "type": type,
        "choices": choices,
        "metavar": metavar,
        "action": action,
        "collect": collect,
        "resolved": resolved,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class DissectConfig:
    """Settings of one dissection (no global state). Sizes are (H, W). Raises DissectError when invalid.

    The fields recorded in result.json come first, in the order they are recorded.
    """

    quantile: float = setting(0.005, "top quantile that sets each unit's threshold (default {default})")
    iou_threshold: float = setting(0.04, "IoU at which a unit counts as a detector (default {default})")
    union: str = setting(
        "original",
        "which images count toward a unit's activation area: original (images "
        "carrying the label's category), lite (only where such a label lies inside the mask), "
        "all (every image)",
        choices=UNIONS,
    )
    upsample: str = setting(
        "bilinear",
        "how activation maps are upsampled to the segmentation size (default {default})",
        choices=UPSAMPLE_MODES,
    )
    categories: Optional[tuple] = setting(
        None,
        "categories to score (default: all of the store's)",
        action="append",
        metavar="CAT[,CAT...]",
        collect=categories_of,
    )
    split: Optional[str] = setting(None, "only images of this split (train/val; default all)")
    top_k: int = setting(
        10, "top-activating images kept per unit (default {default})", type=bounded(1, LIMITS["top_k"])
    )
    input_size: Optional[tuple] = setting(
        None,
        "resize images to this network input size (default: the store's image size)",
        cli=PREPROCESSING,
        type=size,
        metavar="SIZE|HxW",
        resolved="settings.input_size: the size the model was run at",
    )
    mean: Optional[tuple] = setting(
        None,
        "normalisation mean of [0,1] RGB (default: the model's preprocessing, else ImageNet's 0.485,0.456,0.406)",
        cli=PREPROCESSING,
        type=floats3,
        metavar="R,G,B",
    )
    std: Optional[tuple] = setting(
        None,
        "normalisation std (default: the model's preprocessing, else ImageNet's 0.229,0.224,0.225)",
        cli=PREPROCESSING,
        type=floats3,
        metavar="R,G,B",
    )
    cache_dtype: str = setting(
        "float16",
        "dtype of the on-disk activation cache; every statistic uses these rounded values (default {default})",
        cli=("run",),
        choices=CACHE_DTYPES,
    )
    batch_size: int = setting(32, "images per batch (default {default})", type=bounded(1, LIMITS["batch_size"]))
    workers: Optional[int] = setting(
        None,
        "DataLoader worker processes (default: pass 1 decodes images in the CPUs this process may use "
        "less one, at most 4; pass 2 decodes labels and counts in one per CPU, at most 8; recorded in result.json)",
        type=bounded(0, LIMITS["workers"]),
    )
    threads: Optional[int] = setting(
        None,
        "torch threads for the statistics (default 1: small tensors, images split across the workers; a CPU "
        "model forward gets the cores the workers leave); recorded in result.json",
        type=bounded(1, LIMITS["threads"]),
    )
    device: str = setting(
        "auto",
        "auto (cuda when available, else cpu), cpu, cuda or cuda:N (default {default}); the same in every command",
        cli=DISSECTION + ("layers", "ablate"),
    )
    checkpoint_every: int = setting(
        50, "save the statistics every N batches so a killed run resumes (0 = never; default {default})", metavar="N"
    )
    quantile_memory: int = setting(
        1 << 30, "bytes the exact quantile may keep before it switches to histogram passes", cli=()
    )
    cache_dir: Optional[str] = setting(
        None,
        "keep the activation cache here for reuse (default: OUT/.dissect_cache, removed after success)",
        cli=("run",),
    )
    keep_cache: bool = setting(False, "keep the default activation cache after success", cli=("run",))
    quiet: bool = setting(False, "no progress bars (the CLI's -q/--quiet)", cli=())
    layout: Optional[str] = setting(
        None,
        "how layer outputs are read: nchw [B,C,H,W], nhwc channels-last [B,H,W,C], tokens [B,(class/register "
        "+) h*w,C] laid out on the patch grid (default: detected per layer)",
        cli=("run", "layers"),
        choices=LAYOUTS,
        resolved="settings.layout of each layer: the layout used",
    )
    transform: Optional[Callable] = setting(
        None,
        "a callable on [B, 3, H, W] RGB in [0, 1] -> network input (no crop)",
        cli=(),
        resolved="settings.preprocessing: the transform's description",
    )
    rotate: Optional[int] = setting(
        None,
        "multiply the units by a random orthogonal matrix (QR of a seeded Gaussian) before thresholds: the "
        "rotation baseline of Network Dissection (sec. 3.2)",
        metavar="SEED",
        type=int,
        resolved="settings.basis of each layer (and the checkpoint key)",
    )
    basis: Optional[str] = setting(
        None,
        "multiply the units by this C x C matrix before thresholds (instead of --rotate)",
        metavar="FILE.npy",
        resolved="settings.basis of each layer: the file and its sha256",
    )
    sae: Optional[tuple] = setting(
        None,
        "dissect the features of this SAE (`dissect sae train`'s folder or a SAELens folder with cfg.json) "
        "instead of LAYER's units: its encoder is applied at every position; the result goes to OUT/LAYER.sae "
        "beside the units' OUT/LAYER (repeatable; dissect describe: OUT/LAYER.sae/descriptions.csv of the described "
        "layer's SAE)",
        action="append",
        metavar="LAYER=FOLDER",
        cli=DISSECTION + ("describe",),
        resolved="settings.sae of each feature result: the SAE's format, path, sha256, F, k (and the checkpoint key)",
    )
    label_cache: bool = setting(
        True,
        "keep the decoded label planes under STORE/.cache/labels for the next run "
        "(checked against each PNG's size and time, never stale; --no-label-cache: decode "
        "every PNG, write nothing)",
        action=argparse.BooleanOptionalAction,
    )
    null: int = setting(
        0,
        "also test every unit against a permutation null of N pairings of masks and labels "
        "(images paired at random, same thresholds and labels): p- and q-values, significance "
        "(default {default} = none; 100 is a good start; at most %s)" % f"{LIMITS['null']:,}",
        metavar="N",
        type=bounded(0, LIMITS["null"]),
    )
    seed: int = setting(
        0,
        "seed of the null's permutations: permutation k is numpy default_rng([seed, k]) over "
        "the run's images (default {default})",
        type=bounded(0, LIMITS["seed"]),
    )
    alpha: float = setting(
        0.05,
        "false discovery rate: a unit is significant when its Benjamini-Hochberg q-value <= alpha (default {default})",
    )
    detector: str = setting(
        "iou",
        "what counts as a detector: iou (best IoU >= --iou-threshold, the paper's "
        "rule; default), significant (q <= --alpha; needs --null), both",
        choices=DETECTORS,
    )
    progress: Optional[object] = setting(
        None,
        "where progress goes: a callable (given a broden_builder.progress.ProgressEvent per progress line "
        "and a str per note: resume, checkpoint) or a logging.Logger (lines at INFO); None: bars on a terminal, "
        "lines on stderr elsewhere",
        cli=(),
    )

    def __post_init__(self):
        self._check_types()
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
        for name, least in (("top_k", 1), ("batch_size", 1), ("workers", 0), ("checkpoint_every", 0)):
            v = getattr(self, name)
            if v is not None and v < least:
                raise DissectError(f"{name} must be >= {least}, got {v}")
        for name in ("workers", "threads", "batch_size", "top_k"):  # what they make us spawn or allocate
            v = getattr(self, name)
            if v is not None and v > LIMITS[name]:
                raise DissectError(f"{name} must be at most {LIMITS[name]}, got {v}")
        if self.threads is not None and self.threads < 1:
            raise DissectError(f"threads must be >= 1, got {self.threads}")
        if self.quantile_memory < 1:
            raise DissectError(f"quantile_memory must be >= 1 byte, got {self.quantile_memory}")
        if self.rotate is not None and self.basis is not None:
            raise DissectError("give rotate (a seed) or basis (a .npy file), not both")
        if self.rotate is not None and (isinstance(self.rotate, bool) or not isinstance(self.rotate, int)):
            raise DissectError(f"rotate must be an integer seed, got {self.rotate!r}")
        if self.sae is not None:  # ((layer, SAE folder), ...): that layer's SAE features (dissect.sae)
            object.__setattr__(self, "sae", _sae_pairs(self.sae))
            if self.rotate is not None or self.basis is not None:
                raise DissectError(
                    "sae features are dissected in the units' own basis: give sae or rotate/basis, not both"
                )
        self._check_null()
        if isinstance(self.input_size, int):
            object.__setattr__(self, "input_size", (self.input_size, self.input_size))
        if self.input_size is not None and max(self.input_size) > LIMITS["input_size"]:
            raise DissectError(f"input_size must be at most {LIMITS['input_size']} pixels, got {self.input_size}")
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(self.categories))
        if self.layout is not None and self.layout not in LAYOUTS:
            raise DissectError(f"layout must be one of {LAYOUTS} (or None to detect), got {self.layout!r}")
        if self.progress is not None and not (callable(self.progress) or isinstance(self.progress, logging.Logger)):
            raise DissectError(f"progress must be a callable or a logging.Logger, got {type(self.progress).__name__}")
        if self.transform is not None and not callable(self.transform):
            raise DissectError(f"transform must be callable, got {type(self.transform).__name__}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))

    def _check_types(self) -> None:
        """Each field's value against its declared type (a config file or a Python caller can give
        anything): DissectError naming the field, the type and the value. Integers are not bools,
        numbers are not strings; numpy numbers become Python ones; a str where a list is declared
        is refused, except ``categories`` ("object,part", as on the command line) and ``sae``
        ("LAYER=FOLDER"). Python-only fields (callables, objects) are checked where they are used."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind, optional = _declared(f.name)
            if v is None and optional or kind is None:
                continue
            if f.name == "categories" and isinstance(v, str):
                v = categories_of([v])
            elif f.name == "sae" and isinstance(v, str):
                v = (v,)
            elif f.name == "input_size" and _is_int(v):
                v = (int(v), int(v))
            ok = (
                _is_int(v)
                if kind is int
                else _is_number(v)
                if kind is float
                else isinstance(v, bool)
                if kind is bool
                else not isinstance(v, _NOT_TEXT)
                if kind is str  # paths and torch.device are fine too
                else isinstance(v, (tuple, list, np.ndarray)) or (f.name == "sae" and isinstance(v, dict))
            )
            if not ok:
                raise DissectError(
                    f"{f.name} must be {_KIND_WORDS[kind]}{' or None' if optional else ''}, "
                    f"got {v!r} ({type(v).__name__})"
                )
            if kind is int:
                v = int(v)
            elif kind is float:
                v = float(v)
            elif kind is tuple and f.name in _ELEMENTS:
                v = tuple(v.tolist() if isinstance(v, np.ndarray) else v)
                each, words = _ELEMENTS[f.name]
                bad = [x for x in v if not each(x)]
                if bad:
                    raise DissectError(f"{f.name} must be a list of {words}, got {bad[0]!r} in {list(v)}")
            object.__setattr__(self, f.name, v)

    def _check_null(self) -> None:
        for name in ("null", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= LIMITS[name]:
                raise DissectError(f"{name} must be an integer in 0..{LIMITS[name]:,}, got {v!r}")
        if not 0 < self.alpha <= 1:
            raise DissectError(f"alpha must lie in (0, 1] (a false discovery rate), got {self.alpha}")
        if self.detector not in DETECTORS:
            raise DissectError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.detector != "iou" and self.null < 1:
            raise DissectError(
                f"detector {self.detector!r} needs the permutation null: give null >= 1 (--null N, e.g. 100)"
            )

    def replace(self, **changes) -> "DissectConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


#: what a text setting (a name, a path, a device) can never be
_NOT_TEXT = (numbers.Number, bool, np.bool_, list, tuple, dict, set, np.ndarray)
_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", tuple: "a list"}
#: list fields whose elements have a kind: (test, words for the message)
_ELEMENTS = {
    "categories": (lambda x: isinstance(x, str), "category names"),
    "input_size": (_is_int, "integers (height, width)"),
    "mean": (_is_number, "numbers"),
    "std": (_is_number, "numbers"),
}


def _declared(name: str) -> tuple:
    """(int, float, bool, str, tuple or None for a Python-only object, whether None is allowed) of a
    DissectConfig field, from its annotation."""
    hint = _FIELD_TYPES.get(name)
    if hint is None:
        import typing

        hints = typing.get_type_hints(DissectConfig)
        for field_name, t in hints.items():
            args = typing.get_args(t)
            optional = type(None) in args
            base = next((a for a in args if a is not type(None)), t) if optional else t
            base = typing.get_origin(base) or base
            _FIELD_TYPES[field_name] = (base if base in _KIND_WORDS else None, optional)
        hint = _FIELD_TYPES[name]
    return hint


_FIELD_TYPES: dict = {}


def _sae_pairs(value) -> Optional[tuple]:
    """((layer, path), ...) from a dict, pairs or 'LAYER=PATH' strings; raises DissectError."""
    items = value.items() if isinstance(value, dict) else value
    pairs = []
    for item in items:
        if isinstance(item, str):
            layer, sep, path = item.partition("=")
            if not sep or not layer or not path:
                raise DissectError(f"sae must be given as LAYER=PATH, got {item!r}")
            item = (layer, path)
        if len(item) != 2:
            raise DissectError(f"sae entries are (layer, path) pairs, got {item!r}")
        pairs.append((str(item[0]), str(item[1])))
    layers = [l for l, _ in pairs]
    if len(set(layers)) != len(layers):
        raise DissectError(f"sae names a layer twice: {sorted(l for l in set(layers) if layers.count(l) > 1)}")
    return tuple(pairs) or None


def recorded(cfg: DissectConfig) -> dict:
    """{field: JSON value} of the settings that decide a result, in field order: what result.json's
    ``settings`` starts with and what a checkpoint must match to be resumed. Every field but
    :data:`RUNTIME_ONLY` and those declared ``resolved`` (the engine records their resolved value);
    tuples become lists and paths strings."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name in RUNTIME_ONLY or f.metadata.get("resolved"):
            continue
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
    return out


def default(name: str):
    """The default value of field ``name`` (the CLI's option defaults come from here)."""
    f = DissectConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


#: Settings only Python can give (objects, not values): a config file cannot hold them.
PYTHON_ONLY = ("transform", "progress")


def read_config_file(path) -> dict:
    """The settings of a YAML (or JSON) file whose keys are :class:`DissectConfig`'s field names
    (``dissect run --config run.yaml``), checked by making a DissectConfig of them.

    Lists become tuples (``mean: [0.5, 0.5, 0.5]``). Raises DissectError naming the file and the
    key: a file that cannot be read, not a mapping, an unknown key (with the nearest names), a
    Python-only setting (``transform``, ``progress``) or an invalid value."""
    from pathlib import Path

    from broden_builder.shared import did_you_mean, read_yaml

    path = Path(path)
    doc = read_yaml(path, DissectError, "settings file")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise DissectError(
            f"{path}: expected a mapping of DissectConfig settings (key: value), got {type(doc).__name__}"
        )
    known = [f.name for f in dataclasses.fields(DissectConfig) if f.name not in PYTHON_ONLY]
    values: dict = {}
    for key, value in doc.items():
        if key is None:  # YAML reads an unquoted `null:` key as null itself: the field is meant
            key = "null"
        if key in PYTHON_ONLY:
            raise DissectError(f"{path}: {key!r} can only be given in Python (it is an object, not a value)")
        if key not in known:
            raise DissectError(
                f"{path}: unknown setting {key!r}{did_you_mean(str(key), known)} (the keys are "
                f"DissectConfig's: {', '.join(known)})"
            )
        values[key] = tuple(value) if isinstance(value, list) else value
    try:
        DissectConfig(**values)
    except (DissectError, TypeError) as e:
        raise DissectError(f"{path}: {e}") from None
    return values
