"""Capture layer outputs with forward hooks: copies taken at the call, call counts, selectors.

``with TraceDict(model, ["layer3", "layer4:0", "layer1.0.relu#2"], stop=True) as td: model(x)``
leaves ``td["layer4:0"]`` holding a copy of that tensor. Each name is a selector
(dissect.capture._selectors: ``MODULE[#CALL][:KEY...]``). Rules, all for correctness:

- the captured tensor is ``detach().clone()``-d inside the hook, at the moment of the call.
  Keeping a view is wrong: later in-place ops of the same forward pass (torchvision's
  ``out += identity`` and ``ReLU(inplace=True)``, MobileNet's ReLU6) rewrite it, so a layer's
  values would depend on which later layers run;
- every call of a hooked module is counted (``td.calls``); a selector without ``#CALL`` takes the
  first call, and ``probe_layers`` refuses modules called more than once (CallCountError);
- ``stop=True`` ends the forward pass (StopForward, caught by the context manager) once every
  selector has its tensor. Hooks are removed on exit, also when the forward pass raises.

A selector that does not fit the output (SelectorError) is recorded in ``td.errors`` during the
pass and raised after it, so a forward pass is never left half-run by our own hook.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from ..errors import DissectError
from ._selectors import (
    CallCountError,
    Selector,
    SelectorError,
    describe,
    parse_selector,
    select_tensor,
    shape_text,
    structure_kind,
    tensor_leaves,
)

log = logging.getLogger(__name__)


class UnknownLayerError(DissectError, KeyError):
    """A layer name that is not a module of the model; the message lists the nearest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once every traced layer has been seen."""


class ForwardError(DissectError, RuntimeError):
    """The model's own forward pass raised (``cause``); not a problem of the selectors or hooks."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {str(cause).strip() or type(cause).__name__}")
        self.cause = cause

    def __reduce__(self):
        # rebuilt from its cause, so it crosses processes unchanged
        return type(self), (self.cause,)


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
        f"model has no layer {name!r}{hint} (run `dissect layers --model ...` to list all {len(names)})"
    )


def resolve_selector(model: nn.Module, text) -> Selector:
    """Parse ``text`` and check that its module exists (UnknownLayerError otherwise)."""
    if isinstance(text, Selector):
        sel = text
    else:
        names = set(layer_names(model))
        sel = parse_selector(text, names)
    get_layer(model, sel.module)
    return sel


def as_feature_map(name: str, out) -> torch.Tensor:
    """A [B, U, h, w] or [B, U] tensor as [B, U, h, w] (other layouts: dissect.capture._layouts)."""
    if not isinstance(out, torch.Tensor):
        raise SelectorError(f"layer {name!r} returns {describe(out)}, not a tensor")
    if out.dim() == 2:
        out = out[:, :, None, None]
    if out.dim() != 4:
        from ._layouts import LayoutError

        raise LayoutError(
            f"layer {name!r} output has shape {tuple(out.shape)}; dissection needs "
            f"[batch, units, h, w] (or [batch, units])"
        )
    return out


class TraceDict:
    """Context manager capturing copies of selected module outputs (see the module docstring)."""

    def __init__(self, model: nn.Module, layers: Sequence, stop: bool = False, detach: bool = True, clone: bool = True):
        self.model = model
        self.layers = list(dict.fromkeys(str(x) for x in layers))
        self.selectors = {
            key: resolve_selector(model, sel) for key, sel in zip(self.layers, list(dict.fromkeys(layers)))
        }
        self.modules = {s.module: get_layer(model, s.module) for s in self.selectors.values()}
        self.stop = stop
        self.detach = detach
        self.clone = clone
        self.outputs: dict = {}  # key -> captured tensor
        self.resolved: dict = {}  # key -> Selector with the full path to the tensor
        self.errors: dict = {}  # key -> SelectorError
        self.structures: dict = {}  # key -> structure of the module output ('tensor', 'tuple', 'dict', ...)
        self.calls: dict = {m: 0 for m in self.modules}
        self._handles: list = []

    def _hook(self, module_name: str):
        mine = [(k, s) for k, s in self.selectors.items() if s.module == module_name]

        def fn(module, inputs, output):
            self.calls[module_name] += 1
            k_call = self.calls[module_name]
            for key, sel in mine:
                if (sel.call or 1) != k_call or key in self.outputs or key in self.errors:
                    continue
                self.structures[key] = structure_kind(output)
                try:
                    t, path = select_tensor(output, sel)
                except SelectorError as e:
                    self.errors[key] = e
                    continue
                if self.detach:
                    t = t.detach()
                if self.clone:  # a copy now: later in-place ops in this forward pass must not reach it
                    t = t.clone()
                self.outputs[key] = t
                self.resolved[key] = sel.with_path(path)
            if self.stop and all(k in self.outputs or k in self.errors for k in self.selectors):
                raise StopForward()

        return fn

    def __enter__(self) -> "TraceDict":
        try:
            for name, mod in self.modules.items():
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

    def raise_errors(self) -> None:
        """Raise the first selector error, or CallCountError for a selector whose call never came."""
        for key, sel in self.selectors.items():
            if key in self.errors:
                raise self.errors[key]
            if key not in self.outputs:
                n = self.calls[sel.module]
                if n == 0:
                    raise CallCountError(
                        f"layer {sel.module!r} is not called during the forward pass "
                        f"(it is defined but the model's forward never runs it)"
                    )
                raise CallCountError(
                    f"layer {key!r}: module {sel.module!r} is called {n} time(s) per forward "
                    f"pass; there is no call #{sel.call} (use #1..#{n})"
                )


class Trace(TraceDict):
    """TraceDict for one layer; ``.output`` holds its output."""

    def __init__(self, model: nn.Module, layer: str, stop: bool = False, detach: bool = True):
        super().__init__(model, [layer], stop=stop, detach=detach)

    @property
    def output(self):
        return self.outputs.get(self.layers[0])


def run_layers(model: nn.Module, x: torch.Tensor, layers: Sequence, stop: bool = True) -> dict:
    """Run ``model(x)`` (no grad) and return {selector text: copy of its tensor}; stops early after
    the last one. Call counts are not checked here (``probe_layers`` does that once).
    A failure of the model's forward pass raises ForwardError."""
    with torch.no_grad():
        with TraceDict(model, layers, stop=stop) as td:
            try:
                model(x)
            except StopForward:
                raise
            except Exception as e:
                raise ForwardError(e) from e
    td.raise_errors()
    return dict(td.outputs)


@dataclass
class Probe:
    """One selector after a full forward pass: the resolved selector, the module's call count and
    the captured tensor (a copy)."""

    key: str
    selector: Selector
    calls: int
    tensor: torch.Tensor
    structure: str = "tensor"


def call_count_error(key: str, module: str, calls: int) -> CallCountError:
    choices = ", ".join(f"'{module}#{k}'" for k in range(1, min(calls, 4) + 1)) + (" ..." if calls > 4 else "")
    return CallCountError(
        f"layer {key!r}: module {module!r} is called {calls} times per forward pass (a shared or reused module), "
        f"so its output is not one tensor; choose one call with a selector: {choices}"
    )


def probe_layers(model: nn.Module, x: torch.Tensor, layers: Sequence) -> dict:
    """Run one full forward pass and check every selector: {key: Probe}.

    A failure of the model's forward pass raises ForwardError (its ``cause`` is the original).

    Raises CallCountError (module not called, called more than once without ``#CALL``, or fewer
    times than ``#CALL``), SelectorError (output does not fit the selector) and
    UnknownLayerError. An exception of the forward pass itself propagates unchanged, unless every
    selector had its tensor before it (a head that only fits another input size): then the pass
    counts only the calls up to the failure, which is logged.
    """
    with torch.no_grad():
        td = TraceDict(model, layers, stop=False)
        with td:
            try:
                model(x)
            except Exception as e:
                if len(td.outputs) + len(td.errors) < len(td.selectors):
                    raise ForwardError(e) from e
                log.warning(
                    "the forward pass fails after the last requested layer (%s: %s); call counts "
                    "are those before the failure",
                    type(e).__name__,
                    str(e).strip()[:200],
                )
    td.raise_errors()
    out = {}
    for key, sel in td.selectors.items():
        n = td.calls[sel.module]
        if sel.call is None and n > 1:
            raise call_count_error(key, sel.module, n)
        out[key] = Probe(key, td.resolved[key], n, td.outputs[key], td.structures.get(key, "tensor"))
    return out


def output_layers(out) -> dict:
    """The tensors of a model output (for TorchScript): 'output', 'output:<i>' or 'output:<key>'."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    leaves = list(tensor_leaves(out))
    if not leaves:
        raise SelectorError(f"model output {describe(out)} holds no tensors")
    return {"output:" + ":".join(p): t for p, t in leaves}


@dataclass
class LayerInfo:
    """One row of ``dissect layers``: a module, its call count and its (first call's) output."""

    name: str
    type: str
    calls: int
    structure: str  # 'tensor', 'tuple', 'dict', ... or '-' when not called
    tensors: list  # [(selector text, shape tuple, layout text)] for every tensor in the output

    @property
    def shape(self) -> Optional[tuple]:
        """Shape of the output when it is one tensor (else None)."""
        return self.tensors[0][1] if self.structure == "tensor" and self.tensors else None


def list_layers(
    model: nn.Module,
    input_size: Iterable[int] = (224, 224),
    device: Optional[torch.device] = None,
    layout: Optional[str] = None,
) -> list:
    """A LayerInfo for every named module, from one dummy forward pass (1 x 3 x H x W zeros).

    ``input_size`` is (H, W). A TorchScript module gives its outputs only (hooks cannot be
    attached inside it). The layout column is what dissection would use (dissect.capture._layouts).
    """
    from ._layouts import LayoutError, detect_layout

    h, w = tuple(input_size)
    calls: dict = {}
    first: dict = {}
    handles = []
    script = isinstance(model, torch.jit.ScriptModule)

    def hook(name):
        def fn(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in first:
                first[name] = (structure_kind(output), [(p, tuple(t.shape)) for p, t in tensor_leaves(output)])

        return fn

    def lay(shape, name):
        try:
            return detect_layout(shape, (h, w), model, force=layout, name=name).text()
        except LayoutError:
            return "-"

    try:
        if not script:
            for n, m in model.named_modules():
                if n:
                    handles.append(m.register_forward_hook(hook(n)))
        x = torch.zeros(1, 3, h, w, device=device)
        with torch.no_grad():
            out = model(x)
    finally:
        for hd in handles:
            hd.remove()
    if script:
        tensors = [(k, tuple(t.shape), lay(t.shape, k)) for k, t in output_layers(out).items()]
        return [LayerInfo("output", "output", 1, structure_kind(out), tensors)]
    rows = []
    for n, m in model.named_modules():
        if not n:
            continue
        kind, leaves = first.get(n, ("-", []))
        tensors = [((n + "".join(f":{k}" for k in p)), s, lay(s, n)) for p, s in leaves]
        rows.append(LayerInfo(n, type(m).__name__, calls.get(n, 0), kind, tensors))
    return rows


__all__ = [
    "UnknownLayerError",
    "StopForward",
    "TraceDict",
    "Trace",
    "run_layers",
    "probe_layers",
    "Probe",
    "list_layers",
    "LayerInfo",
    "get_layer",
    "layer_names",
    "output_layers",
    "resolve_selector",
    "as_feature_map",
    "ForwardError",
    "CallCountError",
    "SelectorError",
    "shape_text",
]
