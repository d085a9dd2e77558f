"""The recipe keys of ``type: segmenter`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import Dict, List, Optional, Union

from pydantic import Field, field_validator

from ..entry import SourceEntry, check_category


class SegmenterEntry(SourceEntry):
    """``type: segmenter``: a folder of images labelled by a segmentation model saved locally (predicted, not annotated)."""

    images: str = Field(..., description="image folder")
    model: str = Field(..., description="hf:FOLDER, torchvision:NAME:CHECKPOINT or path/file.py:function")
    threshold: Optional[Union[float, Dict[str, float]]] = Field(
        None, description="least confidence of a labelled pixel: a number, or {class name: number} (others 0)")
    min_area: Optional[float] = Field(None, ge=0, le=1, description="a class covering less of an image "
                                                                    "(a fraction) is removed there")
    categories: Optional[Dict[str, str]] = Field(None, description="class name -> category (default object)")
    drop: Optional[List[str]] = Field(None, description="classes never written (their pixels stay unlabelled)")
    batch_size: Optional[int] = Field(None, ge=1, description="images per model call (default 8)")
    device: Optional[str] = Field(None, description="cpu, cuda, cuda:N or auto (default: cuda when available)")

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):  # strict mode refuses 1 for a float; 0 and 1 are numbers
            return float(v)
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v):
        for category in (v or {}).values():
            check_category(category)
        return v
