"""The recipe keys of ``type: pascal`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field

from ..entry import DownloadableEntry


class PascalEntry(DownloadableEntry):
    """``type: pascal``: Pascal VOC 2010 with Pascal-Context objects and Pascal-Part parts."""

    categories: Optional[List[Literal["object", "part"]]] = Field(None, description="object, part (default both)")
