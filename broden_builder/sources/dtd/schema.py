"""The recipe keys of ``type: dtd`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from ..entry import DownloadableEntry


class DtdEntry(DownloadableEntry):
    """``type: dtd``: the Describable Textures Dataset r1.0.1."""
