"""The recipe keys of ``type: opensurfaces`` entries (checked before the source is made; docs/recipe.md)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from ..entry import DownloadableEntry


class OpenSurfacesEntry(DownloadableEntry):
    """``type: opensurfaces``: OpenSurfaces materials."""

    photos_url: Optional[str] = Field(None, description="where the photos are fetched from")
    download_workers: Optional[int] = Field(None, ge=1, le=64, description="parallel photo downloads (default 8)")
