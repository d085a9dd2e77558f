"""The recipe keys of ``type: ade20k`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import Optional, Union

from pydantic import Field

from ..entry import DownloadableEntry


class Ade20kEntry(DownloadableEntry):
    """``type: ade20k``: ADE20K (the 2016-07-26 release by default)."""

    version: Optional[Union[str, int]] = Field(None, description='"2016" (default) or "2021"')
