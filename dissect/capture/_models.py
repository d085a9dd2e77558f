"""Load the network to dissect: a torchvision or timm name, a Hugging Face folder, ``file.py:function``,
a TorchScript file or a ``torch.export`` program.

``load_model(spec, weights)`` returns a ``LoadedModel`` (module in eval mode, an identity record
used for cache keys and result.json, and the preprocessing the model asks for).

- torchvision name (``resnet18``, ``vit_b_16``, ...): ``weights`` is a weight enum name
  (``IMAGENET1K_V1``, ``DEFAULT`` or ``ResNet18_Weights.IMAGENET1K_V1``), ``none`` (random init,
  seed 0), or a checkpoint path (a bare state_dict or ``{'state_dict': ...}``, with or without
  DataParallel ``module.`` prefixes). Leaving ``weights`` out is refused (MissingWeightsError,
  listing the choices): random weights are never chosen silently.
- ``timm:NAME``: ``timm.create_model(NAME)``; ``weights`` is ``none`` (random init, offline) or a
  checkpoint path (timm's hub downloads are not used: this tool works offline). Also refused
  without ``weights``.
- ``hf:PATH``: a Hugging Face ``transformers`` vision model (``AutoModel``) from a local folder
  (config.json + weights), or a hub id already in the local cache (nothing is downloaded; a hub
  id that is not cached gets a clear error). ``weights`` ``none`` builds it from its config with
  random weights.
- ``path/to/program.pt2``: a ``torch.export`` program, unflattened (``torch.export.unflatten``)
  so its submodules keep their names and can be hooked. Export it with a dynamic batch dimension.
  ``torch.export.load`` unpickles parts of the archive (sample inputs, constants, some weights,
  falling back to ``weights_only=False``), so a ``.pt2`` is refused unless ``unsafe_unpickle=True``
  (``--unsafe-unpickle``), like any full pickle (ExportUnpickleRefused).
- ``path/to/file.py:function``: the function is called without arguments, after
  ``torch.manual_seed(0)`` (so a function that initialises at random gives the same weights on every
  call and every rank), and must return an ``nn.Module``; a checkpoint path in ``weights`` is then
  loaded into it. Without ``weights`` the model is recorded as built by the function (it may load
  weights itself), with a sha256 of its state_dict (``state_sha256``), so a cache or checkpoint of
  other weights is never reused; ``none`` records the function's own (seeded) init as random.
- a TorchScript file (``torch.jit.save``): forward hooks cannot be attached inside a loaded
  TorchScript module, so it is dissected at its outputs: layer ``output`` (one tensor),
  ``output.0`` ... (tuple) or ``output.<key>`` (dict).

Preprocessing (``LoadedModel.preprocessing``): torchvision weights' ``transforms()``, timm's
``pretrained_cfg`` and a Hugging Face image processor give the normalisation mean/std; models that
only run at one size (ViTs) give that input size. Their resize-and-crop is not applied: dissection
resizes the whole image, so the activation maps stay aligned with the label masks.

Checkpoints are read with ``torch.load(weights_only=True)``; ``unsafe_unpickle=True`` allows
full unpickling, which runs arbitrary code stored in the file: only for files you trust.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..errors import DissectError
from broden_builder.shared import file_sha256, import_user_file, missing_model_folder

log = logging.getLogger(__name__)

UNSAFE_HELP = (
    "allow full unpickling of checkpoints (torch.load(weights_only=False)). UNSAFE: a pickle can "
    "run arbitrary code when loaded, so use this only for files from a source you trust. Also needed for a "
    "torch.export .pt2 program, which torch.export.load unpickles"
)


class ModelLoadError(DissectError):
    """The model or its weights cannot be loaded; the message names the file and the cause."""


class ExportUnpickleRefused(ModelLoadError):
    """A ``.pt2`` program given without ``unsafe_unpickle``: loading it would unpickle the archive."""


class MissingWeightsError(ModelLoadError):
    """A torchvision/timm name given without ``weights``; the message lists the choices."""


RANDOM_INIT = "none (random init, seed 0)"
#: ``--weights none`` on a file.py model: the function's own initialisation, said to be random.
RANDOM_OWN_INIT = "none (random init: the function's own, seed 0)"
#: a file.py model without ``weights``: whatever the function built (its own weights, or its init)
AS_BUILT = "as built by the function (no --weights)"


@dataclass
class LoadedModel:
    """A network ready to run (eval mode) and what identifies it."""

    module: nn.Module
    spec: str
    kind: str  # 'torchvision' | 'timm' | 'hf' | 'export' | 'python' | 'torchscript' | 'module'
    weights: Optional[str] = None
    identity: dict = field(default_factory=dict)  # stable fields for cache keys / result.json
    #: {"source", "mean", "std", "input_size" ([H, W] when the model only runs at that size, else None)}
    preprocessing: Optional[dict] = None

    @property
    def is_torchscript(self) -> bool:
        return self.kind == "torchscript"

    @property
    def random_weights(self) -> bool:
        """True when the weights are a random initialisation (``--weights none``, a control's reset)."""
        w = self.identity.get("weights")
        return isinstance(w, str) and w.startswith("none")

    def weights_text(self) -> str:
        """The weights in words, for console lines and report headers."""
        w = self.identity.get("weights")
        if w == RANDOM_INIT:
            return "RANDOM weights (--weights none: random init, seed 0)"
        if w == RANDOM_OWN_INIT:
            return "RANDOM weights (--weights none: the function's own initialisation, seed 0)"
        if w == AS_BUILT:
            return f"weights as built by the function (no --weights; state sha256 {self.identity['state_sha256'][:12]})"
        if isinstance(w, dict):
            return f"checkpoint {w.get('checkpoint')}"
        if self.random_weights:  # e.g. --controls' random-init copy: "none (random init: reset_parameters, ...)"
            return f"RANDOM weights ({w})"
        return str(w) if w else "the model's own"


def fixed_input_size(module: nn.Module) -> Optional[tuple]:
    """(H, W) for models that only run at one input size (ViTs with fixed position embeddings), else None."""
    try:
        from torchvision.models.vision_transformer import VisionTransformer

        if isinstance(module, VisionTransformer):
            return (int(module.image_size), int(module.image_size))
    except ImportError:  # pragma: no cover
        pass
    pe = getattr(module, "patch_embed", None)
    if pe is not None and getattr(pe, "strict_img_size", False) and getattr(pe, "img_size", None):  # timm
        return tuple(int(x) for x in pe.img_size)
    cfg = getattr(module, "config", None)
    if cfg is not None and getattr(cfg, "patch_size", None) is not None and getattr(cfg, "image_size", None):
        size = cfg.image_size
        return tuple(int(x) for x in size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    return None


def _prep(source: str, mean, std, module: nn.Module, nominal=None) -> dict:
    return {
        "source": source,
        "mean": [float(x) for x in mean] if mean is not None else None,
        "std": [float(x) for x in std] if std is not None else None,
        "input_size": list(fixed_input_size(module)) if fixed_input_size(module) else None,
        "model_input_size": list(nominal) if nominal else None,
    }


def _weights_choices(name: str, enum_names: list, prefix: str = "") -> str:
    shown = (["DEFAULT"] if enum_names else []) + enum_names[:6]
    return (
        f"{prefix}{name}: say which weights to dissect with --weights: "
        + (f"{', '.join(shown)} (torchvision weights), " if shown else "")
        + "a checkpoint path (.pth/.pt state_dict), or 'none' for a random initialisation"
    )


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
    obj: Any
    try:
        if path.suffix == ".safetensors":  # timm / Hugging Face hub checkpoints
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
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
        raise ModelLoadError(
            f"checkpoint {path} is not a state_dict (a dict of tensor names to tensors, or {{'state_dict': ...}})"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_state(module: nn.Module, state: dict, origin: str) -> None:
    """load_state_dict(strict) with an error that lists missing and unexpected keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(own[k].shape) != tuple(state[k].shape)
    ]
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


def _torchvision_weights_failed(name: str, wname: str, url: str, e: Exception) -> str:
    """The message for torchvision weights that could not be had (offline compute nodes): the file
    torch.hub looks for (``torch.hub.get_dir()/checkpoints/<file name of the URL>``, which honours
    ``TORCH_HOME``), where to put it, and the ``--weights PATH`` form."""
    from urllib.parse import urlparse

    fname = Path(urlparse(url).path).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
    return (
        f"{name}: cannot get weights {wname} ({type(e).__name__}: {e}). Offline? torch looks for {cached}: "
        f"download {url} elsewhere and put it there (or set TORCH_HOME to a folder holding "
        f"hub/checkpoints/{fname}), or pass the file itself: --weights /path/to/{fname}"
    )


def _torchvision_model(
    name: str, weights: Optional[str], unsafe_unpickle: bool, require_weights: bool = True
) -> LoadedModel:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        import difflib

        near = difflib.get_close_matches(name, names, n=5)
        raise ModelLoadError(
            f"unknown model {name!r}: not a torchvision model name, a file.py:function or a file"
            + (f"; nearest torchvision names: {near}" if near else "")
        )
    identity: dict = {"kind": "torchvision", "name": name, "torchvision": torchvision.__version__}
    enum_names = [m.name for m in torchvision.models.get_model_weights(name)]
    prep = None
    if weights is None and require_weights:
        raise MissingWeightsError(_weights_choices(name, enum_names))
    if weights is None or str(weights).lower() == "none":
        torch.manual_seed(0)  # random init reproducible across runs and ranks
        module = torchvision.models.get_model(name, weights=None)
        identity["weights"], identity["state_sha256"] = RANDOM_INIT, state_sha256(module)
        wname = "none"
    elif Path(weights).suffix in (".pt", ".pth", ".tar", ".ckpt", ".bin", ".safetensors") or Path(weights).exists():
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
            raise ModelLoadError(
                f"{name}: unknown weights {weights!r}; choose one of "
                f"{['DEFAULT'] + [m.name for m in enum]}, 'none', or a checkpoint path"
            ) from None
        try:
            module = torchvision.models.get_model(name, weights=w)
        except Exception as e:
            raise ModelLoadError(_torchvision_weights_failed(name, f"{enum.__name__}.{w.name}", w.url, e)) from None
        identity["weights"] = f"{enum.__name__}.{w.name}"
        wname = identity["weights"]
        try:
            tf = w.transforms()
            prep = _prep(
                f"torchvision {wname}.transforms() (mean/std; whole image resized, no crop)",
                tf.mean,
                tf.std,
                module,
                tuple(tf.crop_size) * (2 if len(tf.crop_size) == 1 else 1),
            )
        except Exception:  # weights without the usual ImageClassification transforms
            prep = None
    if prep is None:
        prep = _prep("ImageNet mean/std (torchvision's default)", None, None, module)
    return LoadedModel(module.eval(), name, "torchvision", wname, identity, prep)


def _python_model(spec: str, weights: Optional[str], unsafe_unpickle: bool) -> LoadedModel:
    file, func = spec.rsplit(":", 1)
    path = Path(file)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    try:
        mod = import_user_file(path, "_dissect_user_model")
    except Exception as e:
        raise ModelLoadError(f"cannot import {path}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, func, None)
    if fn is None or not callable(fn):
        raise ModelLoadError(f"{path} has no function {func!r}")
    try:
        torch.manual_seed(0)  # as for --weights none: the same command builds the same weights
        module = fn()
    except Exception as e:  # the user's code failed: their error, named, not ours
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(f"{spec}: calling {func}() raised {type(e).__name__}: {first}") from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(module).__name__}, not a torch.nn.Module")
    identity: dict = {"kind": "python", "file": str(path.resolve()), "function": func, "sha256": file_sha256(path)}
    if weights is not None and not _is_none(weights):
        load_state(module, read_checkpoint(Path(weights), unsafe_unpickle), weights)
        identity["weights"] = {"checkpoint": str(Path(weights).resolve()), "sha256": file_sha256(Path(weights))}
    else:  # no file to hash: the weights themselves identify the model (cache and checkpoint keys)
        identity["weights"] = RANDOM_OWN_INIT if _is_none(weights) else AS_BUILT
        identity["state_sha256"] = state_sha256(module)
    return LoadedModel(module.eval(), spec, "python", weights, identity)


def state_sha256(module: nn.Module) -> str:
    """sha256 over ``module.state_dict()`` in its order: each entry's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        if not isinstance(v, torch.Tensor):
            h.update(f"{k}={v!r};".encode())
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        try:
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # dtypes without a byte view (quantized, ...)
            h.update(t.float().numpy().tobytes())
    return h.hexdigest()


def model_record(model) -> dict:
    """What result.json, cache and checkpoint keys record of ``model`` (a LoadedModel or nn.Module):
    its identity, spec and random_weights; an nn.Module by its class and state_dict sha256."""
    if isinstance(model, LoadedModel):
        return dict(model.identity, spec=model.spec, random_weights=model.random_weights)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model must be an nn.Module or LoadedModel, got {type(model).__name__}")
    kind = "torchscript" if isinstance(model, torch.jit.ScriptModule) else "module"
    return {
        "kind": kind,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "state_sha256": state_sha256(model),
    }


#: the fields of a model record that say which network and weights it is (library versions do not)
_IDENTIFYING = ("kind", "name", "ref", "function", "class", "sha256", "state_sha256", "random_weights", "weights")


def _compared(key: str, value):
    """A record's field as compared: weights files by their content (sha256), not their path."""
    if key == "weights" and isinstance(value, dict) and value.get("sha256"):
        return value["sha256"]
    return value


def model_difference(recorded: dict, current: dict) -> Optional[str]:
    """None when two model records (:func:`model_record`, result.json's "model") name the same network
    and weights, else the first field that differs. A field only one of them holds is not compared
    (a record written before it existed); a file is compared by its sha256 where both record one."""
    keys = list(_IDENTIFYING) + ([] if recorded.get("sha256") and current.get("sha256") else ["file"])
    for key in keys:
        if key in recorded and key in current and _compared(key, recorded[key]) != _compared(key, current[key]):
            return key
    return None


def model_words(record: dict) -> str:
    """A model record in words: its spec (or file, name, class) and its weights."""
    what = record.get("spec") or record.get("name") or record.get("file") or record.get("class") or "a model"
    w = record.get("weights")
    if isinstance(w, dict):
        src = w.get("checkpoint") or w.get("hf") or "?"
        weights = f"weights {src}" + (f", sha256 {str(w['sha256'])[:12]}" if w.get("sha256") else "")
    elif w:
        weights = f"weights {w}"
    else:
        weights = "its own weights"
    if record.get("state_sha256"):
        weights += f", state sha256 {str(record['state_sha256'])[:12]}"
    return f"{what} ({weights})"


def _is_none(weights) -> bool:
    return weights is not None and str(weights).lower() == "none"


def _timm_model(name: str, weights: Optional[str], unsafe_unpickle: bool, require_weights: bool = True) -> LoadedModel:
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"timm:{name} needs the timm package (pip install 'broden-dissect[models]')") from None
    if not timm.is_model(name):
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ModelLoadError(f"unknown timm model {name!r}" + (f"; nearest timm names: {near}" if near else ""))
    if weights is None and require_weights:
        raise MissingWeightsError(
            _weights_choices(f"timm:{name}", [])
            + " (timm's pretrained downloads are not used: pass the downloaded checkpoint)"
        )
    torch.manual_seed(0)
    try:
        module = timm.create_model(name, pretrained=False)
    except Exception as e:
        raise ModelLoadError(f"timm:{name}: cannot create the model ({type(e).__name__}: {e})") from None
    identity: dict = {"kind": "timm", "name": name, "timm": timm.__version__}
    if weights is None or _is_none(weights):
        identity["weights"], identity["state_sha256"] = RANDOM_INIT, state_sha256(module)
        wname = "none"
    else:
        path = Path(weights)
        if not path.is_file():
            raise ModelLoadError(
                f"timm:{name}: --weights {weights!r} is not a checkpoint file (timm models take a "
                f"checkpoint path or 'none')"
            )
        state = read_checkpoint(path, unsafe_unpickle)
        load_state(module, state, str(weights))
        identity["weights"] = {"checkpoint": str(path.resolve()), "sha256": file_sha256(path)}
        wname = str(weights)
    try:
        from timm.data import resolve_data_config

        dc = resolve_data_config({}, model=module)
        prep = _prep(
            f"timm pretrained_cfg of {name} (mean/std; whole image resized, no crop)",
            dc["mean"],
            dc["std"],
            module,
            tuple(dc["input_size"][1:]),
        )
    except Exception:
        prep = _prep("ImageNet mean/std (timm gave no pretrained_cfg)", None, None, module)
    return LoadedModel(module.eval(), f"timm:{name}", "timm", wname, identity, prep)


def _hf_files_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin") or f.name.endswith(".index.json")):
            h.update(f.name.encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def _hf_model(ref: str, weights: Optional[str]) -> LoadedModel:
    try:
        import transformers
        from transformers import AutoConfig, AutoModel
    except ImportError:
        raise ModelLoadError(
            f"hf:{ref} needs the transformers package (pip install 'broden-dissect[models]')"
        ) from None
    folder = Path(ref)
    local = folder.is_dir()
    missing = missing_model_folder(ref)
    if missing is not None:
        raise ModelLoadError(f"hf:{ref}: folder {missing} does not exist")
    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=True)
    except Exception as e:
        if local:
            raise ModelLoadError(
                f"hf:{ref}: cannot read the model config in {folder} ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})"
            ) from None
        raise ModelLoadError(
            f"hf:{ref}: not a local folder, and not in the local Hugging Face cache; nothing is downloaded "
            f"here. Download it once (e.g. `huggingface-cli download {ref} --local-dir DIR`) and pass hf:DIR"
        ) from None
    identity: dict = {
        "kind": "hf",
        "ref": str(folder.resolve()) if local else ref,
        "transformers": transformers.__version__,
        "model_type": getattr(config, "model_type", None),
    }
    try:
        if _is_none(weights):
            torch.manual_seed(0)
            module = AutoModel.from_config(config)
            identity["weights"], identity["state_sha256"] = RANDOM_INIT, state_sha256(module)
            wname = "none"
        elif weights is not None:
            raise ModelLoadError(
                f"hf:{ref} carries its own weights; use --weights none for a random init or drop --weights"
            )
        else:
            module = AutoModel.from_pretrained(ref, local_files_only=True)
            identity["weights"] = {
                "hf": identity["ref"],
                "sha256": _hf_files_digest(folder) if local else getattr(config, "_commit_hash", None),
            }
            wname = None
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(
            f"hf:{ref}: cannot load the model ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from None
    return LoadedModel(module.eval(), f"hf:{ref}", "hf", wname, identity, _hf_preprocessing(ref, module))


def _hf_preprocessing(ref: str, module) -> dict:
    """The preprocessing of a Hugging Face model: its image processor's mean/std (and nominal size),
    else ImageNet's."""
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(ref, local_files_only=True)
        size = getattr(proc, "size", None) or {}
        nominal = (size.get("height"), size.get("width")) if "height" in size else None
        return _prep(
            f"Hugging Face image processor {type(proc).__name__} (mean/std; whole image resized, no crop)",
            proc.image_mean,
            proc.image_std,
            module,
            nominal,
        )
    except Exception:
        return _prep("ImageNet mean/std (the folder has no image processor config)", None, None, module)


def _export_model(path: Path, weights: Optional[str], unsafe_unpickle: bool = False) -> LoadedModel:
    if not unsafe_unpickle:  # checked before torch.export.load opens the file: it unpickles
        raise ExportUnpickleRefused(
            f"{path}: a torch.export program is loaded with pickle (torch.export.load unpickles its sample inputs "
            f"and constants, which can run code stored in the file); if you trust the file, rerun with "
            f"--unsafe-unpickle, or give a TorchScript file (torch.jit.save) instead"
        )
    if weights is not None and not _is_none(weights):
        raise ModelLoadError(f"{path} is a torch.export program and carries its own weights; drop --weights")
    try:
        ep = torch.export.load(str(path))
        module = torch.export.unflatten(ep)
    except Exception as e:
        raise ModelLoadError(f"cannot load torch.export program {path}: {type(e).__name__}: {e}") from None
    shapes = []
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    for n in ep.graph.nodes:
        if n.op == "placeholder" and n.name in user and hasattr(n.meta.get("val"), "shape"):
            shapes.append(n.meta["val"].shape)
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise ModelLoadError(
            f"{path}: the exported program takes inputs {[tuple(s) for s in shapes]}; dissection "
            f"needs one image batch [B, 3, H, W]"
        )
    b = shapes[0][0]
    if isinstance(b, int):
        raise ModelLoadError(
            f"{path}: the program was exported with a fixed batch size {b}; export it with a dynamic "
            f"batch dimension (torch.export.export(m, (x,), dynamic_shapes=({{0: Dim.AUTO}},)))"
        )
    hw = shapes[0][2:]
    fixed = [int(hw[0]), int(hw[1])] if all(isinstance(v, int) for v in hw) else None
    identity = {"kind": "export", "file": str(path.resolve()), "sha256": file_sha256(path)}
    prep = {
        "source": "ImageNet mean/std (an exported program records no preprocessing)",
        "mean": None,
        "std": None,
        "input_size": fixed,
        "model_input_size": fixed,
    }
    return LoadedModel(module, str(path), "export", None, identity, prep)


def load_model(
    spec: str, weights: Optional[str] = None, unsafe_unpickle: bool = False, require_weights: bool = True
) -> LoadedModel:
    """Load ``spec`` in eval mode (see the module docstring for the forms of ``spec`` and ``weights``).

    ``require_weights=False`` lets a torchvision/timm name without ``weights`` load with a random
    init (``dissect layers`` only lists modules); otherwise that raises MissingWeightsError.
    """
    spec = str(spec)
    if spec.startswith("timm:"):
        return _timm_model(spec[len("timm:") :], weights, unsafe_unpickle, require_weights)
    if spec.startswith("hf:"):
        return _hf_model(spec[len("hf:") :], weights)
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        return _python_model(spec, weights, unsafe_unpickle)
    path = Path(spec)
    if path.is_file() and path.suffix == ".pt2":
        return _export_model(path, weights, unsafe_unpickle)
    if path.is_file():
        if not _is_torchscript(path):
            raise ModelLoadError(
                f"{path} is not a TorchScript file (for a state_dict, give the architecture as "
                f"--model NAME and the file as --weights)"
            )
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelLoadError(f"cannot load TorchScript {path}: {e}") from None
        if weights is not None and str(weights).lower() != "none":
            raise ModelLoadError(f"{path} is TorchScript and carries its own weights; drop --weights")
        identity = {"kind": "torchscript", "file": str(path.resolve()), "sha256": file_sha256(path)}
        return LoadedModel(module.eval(), spec, "torchscript", None, identity)
    if spec.endswith((".py", ".pt", ".pth", ".ts", ".pt2")) or "/" in spec:
        raise ModelLoadError(
            f"model {spec!r}: file does not exist (expected a torchvision name, timm:NAME, hf:FOLDER, "
            f"path/to/file.py:function, a TorchScript file or a torch.export .pt2 program)"
        )
    return _torchvision_model(spec, weights, unsafe_unpickle, require_weights)
