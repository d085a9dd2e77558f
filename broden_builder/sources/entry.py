"""The keys every recipe source entry shares, as a strict pydantic model; each source's own keys
are a subclass in its folder (``sources/<name>/schema.py``), set as the Source's ``config_schema``.

Strict: an unknown key is an error and no value is coerced (see :mod:`broden_builder.recipe_schema`,
which checks whole recipes and generates docs/recipe.md from these models).
"""
from __future__ import annotations

from typing import Dict, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..store.paths import UnsafePathError, safe_category, safe_component


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SourceEntry(_Strict):
    """Keys every source entry may have."""

    type: str = Field(..., description="the source type (synthetic, pascal, ade20k, ...)")
    prefix: Optional[str] = Field(None, description="folder under images/ (one safe name; default the type)")
    license: Optional[str] = Field(None, description="licence or terms, recorded in the store's provenance")
    citation: Optional[str] = Field(None, description="citation, recorded in the store's provenance")
    rename: Optional[Dict[str, str]] = Field(None, description="{source name: new name}; '!' drops the old name")
    on_collision: Optional[Literal["merge", "error"]] = Field(None, description="broden add: a new label named "
                                                                              "like one of another category")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v):
        if v is not None:
            try:
                safe_component(v, "prefix")
            except UnsafePathError as e:
                raise ValueError(str(e)) from None
        return v


def check_category(v):
    """A category name is one safe file-name component (it becomes c_<category>.csv): ValueError
    naming it otherwise; None passes."""
    if v is not None:
        try:
            safe_category(v, "category")
        except UnsafePathError as e:
            raise ValueError(str(e)) from None
    return v


class DownloadableEntry(SourceEntry):
    path: str = Field(..., description="folder holding (or receiving) the source's files")
    download: Optional[bool] = Field(None, description="false: never download this source")
    downloads: Optional[str] = Field(None, description="folder for the downloaded archives (default PATH/.downloads)")
