"""The recipe keys of ``type: synthetic`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from ..entry import SourceEntry


class SyntheticEntry(SourceEntry):
    """``type: synthetic``: generated scenes (demo, tests)."""

    count: int = Field(1000, ge=0, le=1_000_000, description="number of images (at most a million: the scenes "
                                                             "are listed in memory before any is drawn)")
    seed: int = Field(0, description="random seed")
    native_size: Optional[int] = Field(None, ge=8, le=8192, description="generated image size (default the store size)")
