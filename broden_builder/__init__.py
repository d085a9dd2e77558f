"""Rebuild the Broden concept dataset from its public sources, and read and write Broden stores."""
__version__ = "0.1.0"

from .store.reader import BrodenStore, CategoryInfo, CategoryLabel, IndexRow, Label  # noqa: E402
from .store.errors import StoreFormatError  # noqa: E402

__all__ = ["BrodenStore", "CategoryInfo", "CategoryLabel", "IndexRow", "Label", "StoreFormatError", "__version__"]
