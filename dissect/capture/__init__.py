"""From a model and layer selectors to [B, U, h, w] feature maps (the layers above import from here).

- ``_models``: ``load_model`` (torchvision, timm, Hugging Face, ``file.py:function``, ``.pt2``,
  TorchScript) -> ``LoadedModel``;
- ``_preprocess``: the preprocessing a model asks for (``resolve_preprocessing``);
- ``_selectors``: layer selectors (``name#k``, ``name:key``);
- ``_hooks``: forward hooks (``TraceDict``), layer lookup and listing;
- ``_layouts``: how a captured tensor becomes [B, U, h, w] (nchw, nhwc, tokens);
- ``_plan``: the probe that plans each layer (``plan_layers``), then the capture (``feature_maps``).
"""

from ._hooks import ForwardError, TraceDict, get_layer, list_layers, resolve_selector
from ._layouts import LAYOUTS
from ._models import UNSAFE_HELP, LoadedModel, load_model, model_difference, model_record, model_words, state_sha256
from ._plan import feature_maps, plan_layers
from ._preprocess import Preprocessing, resolve_preprocessing

__all__ = [
    "ForwardError",
    "LAYOUTS",
    "LoadedModel",
    "Preprocessing",
    "TraceDict",
    "UNSAFE_HELP",
    "feature_maps",
    "get_layer",
    "list_layers",
    "load_model",
    "model_difference",
    "model_record",
    "model_words",
    "plan_layers",
    "resolve_preprocessing",
    "resolve_selector",
    "state_sha256",
]
