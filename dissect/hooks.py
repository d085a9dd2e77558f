"""Capture layer outputs with forward hooks that are always removed.

``with TraceDict(model, ["layer3", "layer4"], stop=True) as td: model(x)`` leaves
``td["layer4"]`` holding the output; ``stop=True`` ends the forward pass (by raising
``StopForward``, caught by the context manager) once every layer has been seen.
Hooks are removed on exit, also when the forward pass raises.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from .errors import DissectError


class UnknownLayerError(DissectError, KeyError):
    """A layer name that is not a module of the model; the message lists the nearest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once every traced layer has been seen."""


def layer_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule named ``name``; raises UnknownLayerError listing the nearest names."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = layer_names(model)
    near = difflib.get_close_matches(name, names, n=6, cutoff=0.4)
    if not near:  # e.g. 'layer9': show the names sharing its prefix
        stem = name.split(".")[0].rstrip("0123456789")
        near = [n for n in names if n.startswith(stem)][:6]
    hint = f"; nearest names: {', '.join(near)}" if near else ""
    raise UnknownLayerError(
        f"model has no layer {name!r}{hint} (run `dissect layers --model ...` to list all {len(names)})")


def as_feature_map(name: str, out) -> torch.Tensor:
    """A layer output as a [B, U, h, w] tensor ([B, U] becomes [B, U, 1, 1])."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"layer {name!r} returns {type(out).__name__}, not a tensor")
    if out.dim() == 2:
        out = out[:, :, None, None]
    if out.dim() != 4:
        raise ValueError(f"layer {name!r} output has shape {tuple(out.shape)}; dissection needs "
                         f"[batch, units, h, w] (or [batch, units])")
    return out


class TraceDict:
    """Context manager recording the outputs of named modules (detached)."""

    def __init__(self, model: nn.Module, layers: Sequence[str], stop: bool = False, detach: bool = True):
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.modules = [get_layer(model, n) for n in self.layers]
        self.stop = stop
        self.detach = detach
        self.outputs: dict = {}
        self._handles: list = []

    def _hook(self, name: str):
        def fn(module, inputs, output):
            self.outputs[name] = output.detach() if self.detach and isinstance(output, torch.Tensor) else output
            if self.stop and len(self.outputs) == len(self.layers):
                raise StopForward()

        return fn

    def __enter__(self) -> "TraceDict":
        try:
            for name, mod in zip(self.layers, self.modules):
                self._handles.append(mod.register_forward_hook(self._hook(name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __getitem__(self, name: str):
        return self.outputs[name]


class Trace(TraceDict):
    """TraceDict for one layer; ``.output`` holds its output."""

    def __init__(self, model: nn.Module, layer: str, stop: bool = False, detach: bool = True):
        super().__init__(model, [layer], stop=stop, detach=detach)

    @property
    def output(self):
        return self.outputs.get(self.layers[0])


def run_layers(model: nn.Module, x: torch.Tensor, layers: Sequence[str], stop: bool = True) -> dict:
    """Run ``model(x)`` (no grad) and return {layer: output}; stops early after the last layer."""
    with torch.no_grad():
        with TraceDict(model, layers, stop=stop) as td:
            model(x)
    missing = [n for n in layers if n not in td.outputs]
    if missing:
        raise RuntimeError(f"layer(s) {missing} were not called during the forward pass")
    return dict(td.outputs)


def output_layers(out) -> dict:
    """Name the outputs of a model (for TorchScript): 'output', 'output.<i>' or 'output.<key>'."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    if isinstance(out, (tuple, list)):
        return {f"output.{i}": o for i, o in enumerate(out) if isinstance(o, torch.Tensor)}
    if isinstance(out, dict):
        return {f"output.{k}": o for k, o in out.items() if isinstance(o, torch.Tensor)}
    raise TypeError(f"model output of type {type(out).__name__} holds no tensors")


def list_layers(model: nn.Module, input_size: Iterable[int] = (224, 224), device: Optional[torch.device] = None) -> list:
    """(name, module type, output shape or None) for every named module, from one dummy forward pass.

    ``input_size`` is (H, W); the dummy batch is 1 x 3 x H x W of zeros. Modules that are not
    called (or return no tensor) get shape None.
    """
    h, w = tuple(input_size)
    names = layer_names(model)
    shapes: dict = {}
    handles = []

    def hook(name):
        def fn(module, inputs, output):
            o = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(o, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(o.shape)
        return fn

    try:
        if not isinstance(model, torch.jit.ScriptModule):
            for n, m in model.named_modules():
                if n:
                    handles.append(m.register_forward_hook(hook(n)))
        x = torch.zeros(1, 3, h, w, device=device)
        with torch.no_grad():
            out = model(x)
    finally:
        for hd in handles:
            hd.remove()
    rows = [(n, type(m).__name__, shapes.get(n)) for n, m in model.named_modules() if n]
    if isinstance(model, torch.jit.ScriptModule):
        rows = [(n, "output", tuple(o.shape)) for n, o in output_layers(out).items()]
    return rows
