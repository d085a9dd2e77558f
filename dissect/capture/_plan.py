"""From selectors to [B, U, h, w] feature maps: the probe that plans each layer, then capture.

``plan_layers(model, ["layer4", "encoder.layers.encoder_layer_1"], x)`` runs one full forward pass
on the probe batch ``x`` and returns, per requested name, a LayerPlan: the resolved selector
(which call, which tensor of a structured output), the module's call count, the output
structure, the captured shape, the layout (dissect.capture._layouts) and the resulting (U, h, w).
``feature_maps(model, x, plans)`` then captures copies of those tensors for a batch (stopping the
forward pass after the last one) and lays them out as [B, U, h, w].

TorchScript modules cannot be hooked inside; their outputs are the layers (``output``,
``output:0``, ``output:<key>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ._hooks import ForwardError, output_layers, probe_layers, run_layers
from ._layouts import Layout, detect_layout
from ._selectors import SelectorError, parse_selector, select_tensor, structure_kind


@dataclass(frozen=True)
class LayerPlan:
    """How one requested layer is captured and laid out."""

    name: str  # as requested (the result's name)
    selector: str  # resolved: module[#call][:key...] leading to exactly one tensor
    module: str
    calls: int  # times the module runs per forward pass
    structure: str  # the module output's structure: tensor, tuple, list, dict, dataclass
    captured_shape: tuple  # shape of the captured tensor for a batch of 1
    layout: Layout
    shape: tuple  # (units, h, w) after the layout

    def to_dict(self) -> dict:
        return {
            "requested": self.name,
            "selector": self.selector,
            "module": self.module,
            "calls": self.calls,
            "structure": self.structure,
            "captured_shape": list(self.captured_shape),
            "layout": self.layout.to_dict(),
            "shape": list(self.shape),
        }


def _layout_for(layout, name: str) -> Optional[str]:
    if layout is None or isinstance(layout, str):
        return layout
    return layout.get(name)


def _is_script(model) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def plan_layers(
    model: nn.Module, layers: Sequence[str], x: torch.Tensor, layout: Union[None, str, dict] = None
) -> dict:
    """{name: LayerPlan} from one full forward pass of ``x`` ([1, 3, H, W]).

    ``layout`` forces a layout (``nchw``, ``nhwc``, ``tokens``) for all layers, or per name (dict).
    Raises ForwardError (the model's forward fails on ``x``), CallCountError, SelectorError,
    LayoutError or UnknownLayerError; each message names the layer and what to choose.
    """
    size = tuple(x.shape[-2:])
    plans = {}
    if _is_script(model):
        out = _script_outputs(model, x)
        kind = structure_kind(out)
        for name in layers:
            sel = parse_selector(name)
            if sel.module != "output" or sel.call:
                raise SelectorError(
                    f"layer {name!r}: a TorchScript model is dissected at its outputs, "
                    f"named {sorted(output_layers(out))}"
                )
            t, path = select_tensor(out, sel)
            plans[name] = _plan(name, str(sel.with_path(path)), "output", 1, kind, t, size, model, layout)
        return plans
    probes = probe_layers(model, x, layers)
    for name in layers:
        p = probes[str(name)]
        plans[str(name)] = _plan(
            str(name), str(p.selector), p.selector.module, p.calls, p.structure, p.tensor, size, model, layout
        )
    return plans


def _script_outputs(model, x: torch.Tensor):
    """A TorchScript model's outputs for ``x`` (no gradients); raises ForwardError when it fails."""
    try:
        with torch.no_grad():
            return model(x)
    except Exception as e:
        raise ForwardError(e) from e


def _plan(name, selector, module, calls, structure, t, size, model, layout) -> LayerPlan:
    lay = detect_layout(tuple(t.shape), size, model, force=_layout_for(layout, name), name=name)
    fm = lay.apply(t, name)
    return LayerPlan(name, selector, module, calls, structure, tuple(t.shape), lay, tuple(fm.shape[1:]))


def feature_maps(model: nn.Module, x: torch.Tensor, plans: dict) -> dict:
    """{name: [B, U, h, w] float tensor} for a batch ``x``, captured as planned (copies; the forward
    pass stops after the last planned module). Raises ForwardError when the forward pass fails."""
    if _is_script(model):
        out = _script_outputs(model, x)
        got = {n: select_tensor(out, parse_selector(p.selector))[0] for n, p in plans.items()}
    else:
        sels = {n: p.selector for n, p in plans.items()}
        outs = run_layers(model, x, list(dict.fromkeys(sels.values())))
        got = {n: outs[s] for n, s in sels.items()}
    return {n: plans[n].layout.apply(t, n) for n, t in got.items()}
