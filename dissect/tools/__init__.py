"""Tools on top of a dissection: ``dissect compare``, ``dissect ablate``, unit masks on new images, notebooks.

- ``_compare``: ``write_compare`` (several results side by side), ``side_by_side`` (as text);
- ``_controls``: ``dissect_with_controls`` (``dissect run --controls``: random-init and rotated baselines);
- ``_ablate``: unit ablation (``ablate``, ``open_data``, ``result_preprocessing``, ``top_units_for_concept``);
- ``_segment``: ``unit_masks`` on new images, ``preprocess`` (images prepared like the store's);
- ``_sae_train``: ``dissect sae train`` (``add_sae_parser``, ``sae_train_command``);
- ``_notebook``: a result in Jupyter (``top_images``, ``show_unit``, ``layer_html``, ``matches``).
"""

from ._ablate import ablate, open_data, result_preprocessing, top_units_for_concept
from ._compare import collect, run_names, side_by_side, write_compare
from ._controls import ControlRuns, dissect_with_controls, expand_controls, random_init
from ._sae_train import add_parser as add_sae_parser
from ._sae_train import cmd_train as sae_train_command
from ._notebook import layer_html, matches, show_unit, top_images, unknown_concept
from ._segment import preprocess, unit_masks

__all__ = [
    "collect",
    "run_names",
    "ControlRuns",
    "dissect_with_controls",
    "expand_controls",
    "random_init",
    "side_by_side",
    "ablate",
    "layer_html",
    "matches",
    "open_data",
    "result_preprocessing",
    "preprocess",
    "add_sae_parser",
    "sae_train_command",
    "show_unit",
    "top_images",
    "top_units_for_concept",
    "unit_masks",
    "unknown_concept",
    "write_compare",
]
