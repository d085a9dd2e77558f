"""The source interface: cheap picklable metadata per image, and a pure resolver into label planes.

A source turns one public dataset (or the user's own) into rows of a Broden store.
``records()`` lists the images with just enough metadata to find them again (cheap,
picklable, done in the parent process); ``resolve(record)`` loads the image and its
labels at native resolution (pure, run in worker processes). Labels are *source
codes*: small integers in the source's own vocabulary, ``vocabulary()[category][code]``
giving the names (preferred name first, then synonyms). The unifier maps them to
global numbers.

Third-party sources subclass :class:`Source`, set ``type_name`` and register with
:func:`broden_builder.sources.register_source` or the entry-point group
``broden_builder.sources``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import BadSourceItem, SourceDataError, SourceMissingError  # noqa: F401  (part of the source interface)


@dataclass(frozen=True)
class ImageRecord:
    """Cheap, picklable metadata of one source image.

    ``basename`` names the image in the store (``images/<prefix>/<basename>.jpg``);
    ``meta`` holds whatever the resolver needs (paths, ids), all picklable.
    """

    basename: str
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Resolved:
    """An image with its labels at native resolution, in source codes.

    ``pixel[category]`` is a list of H x W integer layers (0 = unlabeled), dominant layer
    first, all the size of ``image`` unless the category is in ``own_resolution``;
    ``image_level[category]`` lists codes for the whole image.
    """

    image: np.ndarray
    pixel: dict = field(default_factory=dict)
    image_level: dict = field(default_factory=dict)
    #: Pixel categories given as a stack of levels (ADE20K part levels): every level is written,
    #: empty ones included, as ``<base>_<cat>_<k>.png`` (docs/format.md, rule 7 "Planes").
    stacked: frozenset = frozenset()
    #: Pixel categories whose layers the source draws at a resolution of their own, not the
    #: image's (OpenSurfaces materials at the release script's 1,024-pixel height, docs/format.md
    #: "OpenSurfaces label planes"): their layers agree in size with each other; statistics are
    #: counted on them as drawn and they are shrunk to the store's plane size like any other.
    own_resolution: frozenset = frozenset()


class Source(ABC):
    """Base class of all sources. Subclasses must be picklable (they are sent to worker processes once).

    Third-party sources subclass it, implement vocabulary(), records() and resolve(), and
    register under the entry-point group ``broden_builder.sources``; docs/plugins.md has a
    worked example.
    """

    #: The ``type`` used in recipes.
    type_name: str = ""
    #: Folder under images/ in the store (defaults to type_name).
    prefix: str = ""
    #: The recipe keys of this type: a subclass of ``sources.entry.SourceEntry`` (built-in sources keep
    #: theirs in ``sources/<name>/schema.py``); None checks only the keys every entry shares.
    config_schema: Optional[type] = None
    #: Licence / terms and citation, recorded in the store's provenance.
    license: str = ""
    citation: str = ""

    def __init__(self, config: Mapping[str, Any], image_size: int = 224, segmentation_size: int = 112):
        self.config = dict(config)
        self.image_size = image_size
        self.segmentation_size = segmentation_size
        self.prefix = self.config.get("prefix") or self.prefix or self.type_name
        from ..store.paths import safe_component

        safe_component(self.prefix, f"{self.type_name} source prefix")  # one folder under images/: a prefix is a single safe path component

    @property
    def key(self) -> str:
        """Identifies the source in a build (unique among a recipe's sources)."""
        return self.prefix

    def check(self) -> None:
        """Raise SourceMissingError, with instructions, when the source's files are absent."""

    @abstractmethod
    def vocabulary(self) -> dict:
        """category -> {code: (name, ...)}: the names exactly as the source gives them.

        Each entry is ONE name unless the source's own convention packs several into one
        string (ADE20K comma lists, OpenSurfaces '/' lists), which :meth:`split_names` undoes.
        """

    def split_names(self, category: str, name: str) -> tuple:
        """One name of :meth:`vocabulary` split by the source's own convention (default: not split).

        Only sources whose names are synonym lists override this (ADE20K, OpenSurfaces); user
        sources give one name per entry, never split on commas (docs/format.md, rule 1 "Source labels").
        """
        return (name,)

    def label_names(self, category: str, names) -> tuple:
        """(split names, raw names) of one vocabulary entry (a string or a tuple of names)."""
        raw = (names,) if isinstance(names, str) else tuple(names)
        split: list = []
        for n in raw:
            for part in self.split_names(category, str(n)):
                if part not in split:
                    split.append(part)
        return tuple(split), raw

    @abstractmethod
    def records(self) -> list:
        """The list of ImageRecord, in a deterministic order."""

    @abstractmethod
    def resolve(self, record: ImageRecord) -> Resolved:
        """Load the image and its labels (raise BadSourceItem naming the file when unusable)."""

    def prepare(self, records: list, work, quiet: bool = True) -> None:
        """Optional batched work over ``records`` (those pass 1 has still to do), in the build's
        process before pass 1: a segmentation model predicts their labels in batches. ``work`` is a
        folder of the build's staging area for this source (kept until the build is committed)."""

    def label_provenance(self) -> Optional[dict]:
        """What build.json records for each label of this source when its masks are not annotations
        (a model's predictions: the model, its weights' sha256, thresholds); None for annotated sources."""
        return None

    def image_level_categories(self) -> frozenset:
        """Categories this source labels per image rather than per pixel."""
        return frozenset({"scene", "texture"})

    def provenance(self) -> dict:
        """Version, paths and checksums to record in build.json."""
        return {"type": self.type_name, "prefix": self.prefix, "config": self.config,
                "license": self.license, "citation": self.citation}

    def plan_statistics(self) -> Optional[dict]:
        """Optional: {(category, code): (images, coverage)} from metadata alone, for ``broden build --plan``."""
        return None
