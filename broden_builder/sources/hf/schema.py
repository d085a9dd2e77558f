"""The recipe keys of ``type: hf`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import Dict, List, Optional, Union

from pydantic import Field, field_validator

from ..entry import SourceEntry, check_category


class HFEntry(SourceEntry):
    """``type: hf``: a Hugging Face dataset with a mask column or a label column."""

    dataset: str = Field(..., description="hub id or local path")
    split: Optional[str] = Field(None, description="dataset split (default train)")
    image_column: Optional[str] = Field(None, description="column of the images (default image)")
    mask_column: Optional[str] = Field(None, description="column of the masks (an Image or 2-D integer column): "
                                                         "pixel labels")
    label_column: Optional[str] = Field(None, description="column of image-level labels instead of masks "
                                                          "(ClassLabel, integer with names, text, or a list)")
    category: Optional[str] = Field(None, description="category of the labels (default object; required with "
                                                      "label_column, e.g. scene or a new one)")
    id_column: Optional[str] = Field(None, description="column giving the store file names (default "
                                                       "<split>_<row>)")
    unlabeled: Optional[Union[int, List[int]]] = Field(None, description="mask values that mean no label "
                                                                         "(default [0])")
    limit: Optional[int] = Field(None, ge=0, description="only the first N rows (0 or absent: all)")
    names: Optional[Union[List[str], Dict[int, str], Dict[str, str]]] = Field(
        None, description="value -> name (a list indexed by value, or a mapping); default: the column's "
                          "ClassLabel names")

    @field_validator("category")
    @classmethod
    def _categories(cls, v):
        return check_category(v)
