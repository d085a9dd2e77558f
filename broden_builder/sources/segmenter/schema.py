"""The recipe keys of ``type: segmenter`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

import difflib
from typing import Any, Dict, List, Optional, Union

from pydantic import Field, ValidationError, field_validator

from ..entry import SourceEntry, _Strict, check_category


class DatasetImages(_Strict):
    """``images: {dataset: ...}``: the image column of a Hugging Face dataset, read as the hf source reads it."""

    dataset: str = Field(..., description="a Dataset.save_to_disk folder, parquet file(s), or a hub id (network)")
    split: Optional[str] = Field(None, description="dataset split (default train)")
    image_column: Optional[str] = Field(None, description="column of the images (default image)")
    id_column: Optional[str] = Field(None, description="column giving the store file names (default <split>_<row>)")
    limit: Optional[int] = Field(None, ge=0, description="only the first N rows (0 or absent: all)")


class SourceImages(_Strict):
    """``images: {source: {type: ..., ...}}``: the images of another source entry (its labels are not used)."""

    source: Dict[str, Any] = Field(..., description="a source entry, e.g. {type: ade20k, path: data/ade20k}")

    @field_validator("source")
    @classmethod
    def _source(cls, v):
        from .. import get_source_class  # the inner entry's own schema (same layer: sources/)

        if v.get("type") == "segmenter":
            raise ValueError("images.source cannot itself be a segmenter source")
        try:
            schema = getattr(get_source_class(str(v.get("type"))), "config_schema", None)
        except Exception as e:  # an unknown type: the registry's message names the known ones
            raise ValueError(f"images.source.type: {e}") from None
        if schema is not None:
            try:
                schema.model_validate(v)
            except ValidationError as e:
                raise ValueError(_first_error(e, schema, "images.source.")) from None
        return v


def _first_error(e: ValidationError, model, where: str) -> str:
    """One line for the first error of ``e``: the key (with the nearest known key when unknown) and the message."""
    err = e.errors()[0]
    key = ".".join(str(k) for k in err["loc"])
    if err["type"] == "extra_forbidden":
        near = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(model.model_fields)}"
        return f"{where}{key}: unknown key ({hint})"
    msg = err["msg"][len("Value error, "):] if err["msg"].startswith("Value error, ") else err["msg"]
    return f"{where}{key}: {msg}"


class SegmenterEntry(SourceEntry):
    """``type: segmenter``: images (a folder, an HF dataset or a source's) labelled by a segmentation model saved locally (predicted, not annotated)."""

    images: Union[str, DatasetImages, SourceImages] = Field(
        ..., description="an image folder (searched recursively; a store's images/ folder too), "
                         "{dataset: PATH, split, image_column, id_column, limit} (a Hugging Face dataset), "
                         "or {source: {type: ..., ...}} (the images of another source entry, its labels unused)")
    model: str = Field(..., description="hf:FOLDER, torchvision:NAME:CHECKPOINT or path/file.py:function")
    threshold: Optional[Union[float, Dict[str, float]]] = Field(
        None, description="least confidence of a labelled pixel: a number, or {class name: number} (others 0)")
    min_area: Optional[float] = Field(None, ge=0, le=1, description="a class covering less of an image "
                                                                    "(a fraction) is removed there")
    categories: Optional[Dict[str, str]] = Field(None, description="class name -> category (default object)")
    drop: Optional[List[str]] = Field(None, description="classes never written (their pixels stay unlabelled)")
    batch_size: Optional[int] = Field(None, ge=1, description="images per model call (default 8)")
    device: Optional[str] = Field(None, description="cpu, cuda, cuda:N or auto (default: cuda when available)")

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, v):
        """A mapping is checked against its own form, so a message names its key (a union names none)."""
        if not isinstance(v, dict):
            return v
        form = DatasetImages if "dataset" in v else SourceImages if "source" in v else None
        if form is None:
            raise ValueError("a mapping of images is {dataset: PATH, ...} or {source: {type: ..., ...}}")
        try:
            return form.model_validate(v)
        except ValidationError as e:
            msg = _first_error(e, form, "images.")
            raise ValueError(msg[len("images.source: "):] if msg.startswith("images.source: ") else msg) from None

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
