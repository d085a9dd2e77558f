"""Rebuild the Broden concept dataset from its public sources, and read and write Broden stores."""
__version__ = "0.1.0"

from .store.reader import BrodenStore, CategoryInfo, CategoryLabel, IndexRow, Label  # noqa: E402
from .store.errors import StoreFormatError  # noqa: E402

__all__ = ["BrodenStore", "CategoryInfo", "CategoryLabel", "IndexRow", "Label", "StoreFormatError", "BrodenDataset", "collate_broden", "__version__"]


def __getattr__(name):  # BrodenDataset / collate_broden import torch: load them only when asked for
    if name in ("BrodenDataset", "collate_broden"):
        from . import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module 'broden_builder' has no attribute {name!r}")
