"""The recipe keys of ``type: coco`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field, field_validator

from ..entry import SourceEntry, check_category


class CocoEntry(SourceEntry):
    """``type: coco``: COCO instances, stuff or panoptic annotations."""

    annotations: str = Field(..., description="annotation JSON file")
    images: str = Field(..., description="image folder")
    category: Optional[str] = Field(None, description="category of the labels (default object)")
    stuff_category: Optional[str] = Field(None, description="panoptic only: category of the 'stuff' classes "
                                                            "(isthing 0); default: the same as category")
    annotation_type: Optional[Literal["auto", "instances", "stuff", "panoptic"]] = Field(
        None, description="kind of annotation file (default auto: told from the JSON)")
    crowd: Optional[Literal["label", "unlabeled"]] = Field(
        None, description="crowd regions: label (default) gives them their class, unlabeled leaves them 0")
    layering: Optional[Literal["paint", "layers"]] = Field(
        None, description="overlaps: paint (default) one layer, larger instances first so smaller ones stay "
                          "visible; layers: overlapping instances of other classes go to extra layers")
    keep_unannotated: Optional[bool] = Field(None, description="keep images without any annotation (colour "
                                                               "labels only; default false)")
    missing_images: Optional[Literal["error", "skip"]] = Field(
        None, description="images listed in the JSON but absent on disk: error (default) or skip")
    clean_names: Optional[bool] = Field(None, description="'wall-other-merged' -> 'wall' for panoptic/stuff "
                                                          "class names")
    limit: Optional[int] = Field(None, ge=0, description="only the first N images by file name (0 or absent: all)")
    panoptic_masks: Optional[str] = Field(None, description="panoptic PNG folder (default: the JSON path "
                                                            "without .json)")
    ignore: Optional[List[str]] = Field(None, description="class names left unlabeled (default [other] for "
                                                          "stuff, none otherwise)")

    @field_validator("category", "stuff_category")
    @classmethod
    def _categories(cls, v):
        return check_category(v)
