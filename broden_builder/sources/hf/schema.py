"""The recipe keys of ``type: hf`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import Dict, List, Optional, Union

from pydantic import Field

from ..entry import SourceEntry


class HFEntry(SourceEntry):
    """``type: hf``: a Hugging Face dataset with a mask column or a label column."""

    dataset: str = Field(..., description="hub id or local path")
    split: Optional[str] = None
    image_column: Optional[str] = None
    mask_column: Optional[str] = None
    label_column: Optional[str] = None
    category: Optional[str] = None
    id_column: Optional[str] = None
    unlabeled: Optional[Union[int, List[int]]] = None
    limit: Optional[int] = Field(None, ge=0)
    names: Optional[Union[List[str], Dict[int, str], Dict[str, str]]] = None
