"""Rebuild the Broden concept dataset from its public sources, and read and write Broden stores.

The public API (everything else is private by convention):

- :class:`BrodenStore` (and its row/label records): read a store (broden_builder.store.reader);
- :class:`BrodenDataset`, :func:`collate_broden`, :class:`SegBatch`: the store as a torch
  Dataset and its batches (broden_builder.torch_dataset; imported on first use: they need torch);
- :class:`BrodenError`: the base of every error raised for bad input or missing data;
  :class:`StoreFormatError` is the one for a malformed store.

The ``broden`` command (broden_builder.cli) builds, extends, validates and inspects stores.
"""
__version__ = "0.1.0"

from .errors import BrodenError  # noqa: E402
from .store.errors import StoreFormatError  # noqa: E402
from .store.reader import BrodenStore, CategoryInfo, CategoryLabel, IndexRow, Label  # noqa: E402

__all__ = ["BrodenStore", "CategoryInfo", "CategoryLabel", "IndexRow", "Label", "BrodenError", "StoreFormatError",
           "BrodenDataset", "collate_broden", "SegBatch", "__version__"]

_TORCH = ("BrodenDataset", "collate_broden", "SegBatch")


def __getattr__(name):  # the torch dataset imports torch: load it only when asked for
    if name in _TORCH:
        from . import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module 'broden_builder' has no attribute {name!r}")
