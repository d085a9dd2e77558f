"""The recipe keys of ``type: coco`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field

from ..entry import SourceEntry


class CocoEntry(SourceEntry):
    """``type: coco``: COCO instances, stuff or panoptic annotations."""

    annotations: str = Field(..., description="annotation JSON file")
    images: str = Field(..., description="image folder")
    category: Optional[str] = Field(None, description="category of the labels (default object)")
    stuff_category: Optional[str] = None
    annotation_type: Optional[Literal["auto", "instances", "stuff", "panoptic"]] = None
    crowd: Optional[Literal["label", "unlabeled"]] = None
    layering: Optional[Literal["paint", "layers"]] = None
    keep_unannotated: Optional[bool] = None
    missing_images: Optional[Literal["error", "skip"]] = None
    clean_names: Optional[bool] = None
    limit: Optional[int] = Field(None, ge=0)
    panoptic_masks: Optional[str] = None
    ignore: Optional[List[str]] = None
