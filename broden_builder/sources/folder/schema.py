"""The recipe keys of ``type: folder`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import List, Literal, Optional, Union

from pydantic import Field, field_validator

from ..entry import SourceEntry, check_category


class FolderEntry(SourceEntry):
    """``type: folder``: your own images with masks (or image-level labels) and a value -> name table."""

    images: str = Field(..., description="image folder")
    labels: str = Field(..., description="CSV table value,name (or color,name)")
    category: str = Field(..., description="category of the labels")
    masks: Optional[str] = Field(None, description="mask folder (pixel labels); without it, image-level labels")
    mask_suffix: Optional[str] = Field(None, description="text between an image's stem and .png in its mask's "
                                                         "name (default \"\"; \"_mask\" for masks/<stem>_mask.png)")
    unlabeled: Optional[Union[int, List[int]]] = Field(None, description="mask values that mean no label "
                                                                         "(default [0])")
    missing_masks: Optional[Literal["error", "skip"]] = Field(
        None, description="images without a mask file: error (default) or skip")
    exif_orientation: Optional[bool] = Field(None, description="apply the images' EXIF orientation (default: "
                                                               "yes for image-level labels, no with masks)")

    @field_validator("category")
    @classmethod
    def _categories(cls, v):
        return check_category(v)
