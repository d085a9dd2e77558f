"""Network Dissection: score every unit of a PyTorch layer against a Broden store.

The public API (everything else is private by convention)::

    from dissect import Dissection, DissectConfig
    result = Dissection(model, ["layer4"], "broden1_224").run(out="out")   # a DissectionResult

- :class:`Dissection`, :class:`DissectionResult`: the object API (dissect.api);
- :func:`dissect_model`, :func:`score_activations`: the function API (dissect.engine);
- :class:`DissectConfig`: the settings (dissect.config); :class:`LayerResult`: one layer's result,
  :func:`load_result` reads one back (dissect.results);
- :func:`load_model`, :class:`TraceDict`: models and layer hooks (dissect.capture);
  :func:`preprocess`: new images prepared like the store's (dissect.tools);
- :class:`DissectError`: the base of every error raised for bad input.

The ``dissect`` command (dissect.cli) is the command-line entry point. Names are loaded on first
use, so ``import dissect`` does not import torch.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "Dissection": "api",
    "DissectionResult": "api",
    "dissect_model": "engine",
    "score_activations": "engine",
    "DissectConfig": "config",
    "LayerResult": "results",
    "load_result": "results",
    "load_model": "capture",
    "TraceDict": "capture",
    "preprocess": "tools",
    "DissectError": "errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):  # the API imports torch: load it only when asked for
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'dissect' has no attribute {name!r}")
