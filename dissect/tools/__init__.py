"""Tools on top of a dissection: ``dissect compare``, ``dissect ablate``, unit masks on new images, notebooks.

- ``_compare``: ``write_compare`` (several results side by side);
- ``_ablate``: unit ablation (``ablate``, ``open_data``, ``top_units_for_concept``);
- ``_segment``: ``unit_masks`` on new images, ``preprocess`` (images prepared like the store's);
- ``_notebook``: a result in Jupyter (``top_images``, ``show_unit``, ``layer_html``, ``matches``).
"""
from ._ablate import ablate, open_data, top_units_for_concept
from ._compare import write_compare
from ._notebook import layer_html, matches, show_unit, top_images, unknown_concept
from ._segment import preprocess, unit_masks

__all__ = ["ablate", "layer_html", "matches", "open_data", "preprocess", "show_unit", "top_images",
           "top_units_for_concept", "unit_masks", "unknown_concept", "write_compare"]
