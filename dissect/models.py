"""Load the network to dissect: a torchvision name, ``file.py:function``, or a TorchScript file.

``load_model(spec, weights)`` returns a ``LoadedModel`` (module in eval mode + an identity
record used for cache keys and result.json).

- torchvision name (``resnet18``, ``vgg16``, ...): ``weights`` is a weight enum name
  (``IMAGENET1K_V1``, ``DEFAULT`` or ``ResNet18_Weights.IMAGENET1K_V1``), ``none`` / None
  (random init), or a checkpoint path (a bare state_dict or ``{'state_dict': ...}``, with
  or without DataParallel ``module.`` prefixes).
- ``path/to/file.py:function``: the function is called without arguments and must return
  an ``nn.Module``; a checkpoint path in ``weights`` is then loaded into it.
- a TorchScript file (``torch.jit.save``): forward hooks cannot be attached inside a loaded
  TorchScript module, so it is dissected at its outputs: layer ``output`` (one tensor),
  ``output.0`` ... (tuple) or ``output.<key>`` (dict).

Checkpoints are read with ``torch.load(weights_only=True)``; ``unsafe_unpickle=True`` allows
full unpickling, which runs arbitrary code stored in the file: only for files you trust.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .errors import DissectError

log = logging.getLogger(__name__)

UNSAFE_HELP = (
    "allow full unpickling of checkpoints (torch.load(weights_only=False)). UNSAFE: a pickle can "
    "run arbitrary code when loaded, so use this only for files from a source you trust"
)


class ModelLoadError(DissectError):
    """The model or its weights cannot be loaded; the message names the file and the cause."""


@dataclass
class LoadedModel:
    """A network ready to run (eval mode) and what identifies it."""

    module: nn.Module
    spec: str
    kind: str  # 'torchvision' | 'python' | 'torchscript'
    weights: Optional[str] = None
    identity: dict = field(default_factory=dict)  # stable fields for cache keys / result.json

    @property
    def is_torchscript(self) -> bool:
        return self.kind == "torchscript"


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file (identifies checkpoints and model files in results)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def read_checkpoint(path: Path, unsafe_unpickle: bool = False) -> dict:
    """A state_dict from ``path``: bare, or under 'state_dict' / 'model'; 'module.' prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_unpickle)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        msg = f"cannot load checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if not unsafe_unpickle and "weights_only" in str(e):
            msg += " (the file holds more than tensors; if you trust it, rerun with --unsafe-unpickle)"
        raise ModelLoadError(msg) from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"checkpoint {path} is not a state_dict (a dict of tensor names to tensors, or {{'state_dict': ...}})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_state(module: nn.Module, state: dict, origin: str) -> None:
    """load_state_dict(strict) with an error that lists missing and unexpected keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if bad_shape:
            parts.append(f"shape mismatches {bad_shape[:4]}")
        raise ModelLoadError(f"checkpoint {origin} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(state)


def _torchvision_model(name: str, weights: Optional[str], unsafe_unpickle: bool) -> LoadedModel:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        import difflib

        near = difflib.get_close_matches(name, names, n=5)
        raise ModelLoadError(f"unknown model {name!r}: not a torchvision model name, a file.py:function or a file"
                             + (f"; nearest torchvision names: {near}" if near else ""))
    identity = {"kind": "torchvision", "name": name, "torchvision": torchvision.__version__}
    if weights is None or str(weights).lower() == "none":
        torch.manual_seed(0)  # random init reproducible across runs and ranks
        module = torchvision.models.get_model(name, weights=None)
        identity["weights"] = "none (random init, seed 0)"
        wname = None
    elif Path(weights).suffix in (".pt", ".pth", ".tar", ".ckpt", ".bin") or Path(weights).exists():
        module = torchvision.models.get_model(name, weights=None)
        load_state(module, read_checkpoint(Path(weights), unsafe_unpickle), weights)
        identity["weights"] = {"checkpoint": str(Path(weights).resolve()), "sha256": file_sha256(Path(weights))}
        wname = str(weights)
    else:
        enum = torchvision.models.get_model_weights(name)
        key = str(weights).split(".")[-1]
        try:
            w = enum.DEFAULT if key == "DEFAULT" else enum[key]
        except KeyError:
            raise ModelLoadError(f"{name}: unknown weights {weights!r}; choose one of "
                                 f"{['DEFAULT'] + [m.name for m in enum]}, 'none', or a checkpoint path") from None
        try:
            module = torchvision.models.get_model(name, weights=w)
        except Exception as e:
            raise ModelLoadError(f"{name}: cannot get weights {enum.__name__}.{w.name} ({e})") from None
        identity["weights"] = f"{enum.__name__}.{w.name}"
        wname = identity["weights"]
    return LoadedModel(module.eval(), name, "torchvision", wname, identity)


def _python_model(spec: str, weights: Optional[str], unsafe_unpickle: bool) -> LoadedModel:
    file, func = spec.rsplit(":", 1)
    path = Path(file)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    modname = f"_dissect_user_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    try:
        mspec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    except Exception as e:
        raise ModelLoadError(f"cannot import {path}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, func, None)
    if fn is None or not callable(fn):
        raise ModelLoadError(f"{path} has no function {func!r}")
    module = fn()
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(module).__name__}, not a torch.nn.Module")
    identity = {"kind": "python", "file": str(path.resolve()), "function": func, "sha256": file_sha256(path)}
    if weights is not None and str(weights).lower() != "none":
        load_state(module, read_checkpoint(Path(weights), unsafe_unpickle), weights)
        identity["weights"] = {"checkpoint": str(Path(weights).resolve()), "sha256": file_sha256(Path(weights))}
    return LoadedModel(module.eval(), spec, "python", weights, identity)


def load_model(spec: str, weights: Optional[str] = None, unsafe_unpickle: bool = False) -> LoadedModel:
    """Load ``spec`` (torchvision name, ``file.py:function`` or TorchScript file) in eval mode."""
    spec = str(spec)
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        return _python_model(spec, weights, unsafe_unpickle)
    path = Path(spec)
    if path.is_file():
        if not _is_torchscript(path):
            raise ModelLoadError(f"{path} is not a TorchScript file (for a state_dict, give the architecture as "
                                 f"--model NAME and the file as --weights)")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelLoadError(f"cannot load TorchScript {path}: {e}") from None
        if weights is not None and str(weights).lower() != "none":
            raise ModelLoadError(f"{path} is TorchScript and carries its own weights; drop --weights")
        identity = {"kind": "torchscript", "file": str(path.resolve()), "sha256": file_sha256(path)}
        return LoadedModel(module.eval(), spec, "torchscript", None, identity)
    if spec.endswith((".py", ".pt", ".pth", ".ts")) or "/" in spec:
        raise ModelLoadError(f"model {spec!r}: file does not exist (expected a torchvision name, "
                             f"path/to/file.py:function, or a TorchScript file)")
    return _torchvision_model(spec, weights, unsafe_unpickle)
