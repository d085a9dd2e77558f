"""Source registry: recipe ``type`` name -> Source class (built-ins and entry point ``broden_builder.sources``)."""
from __future__ import annotations

import importlib
from typing import Callable, Type

from ..errors import BrodenError
from .base import BadSourceItem, ImageRecord, Resolved, Source, SourceDataError, SourceMissingError

_REGISTRY: dict = {}
#: Built-in sources, imported on first use so optional dependencies stay optional.
_BUILTIN = {
    "synthetic": "broden_builder.sources.synthetic",
    "ade20k": "broden_builder.sources.ade20k",
    "pascal": "broden_builder.sources.pascal",
    "dtd": "broden_builder.sources.dtd",
    "opensurfaces": "broden_builder.sources.opensurfaces",
    "coco": "broden_builder.sources.coco",
    "hf": "broden_builder.sources.hf",
    "folder": "broden_builder.sources.folder",
}
ENTRY_POINT_GROUP = "broden_builder.sources"


def register_source(name: str) -> Callable[[Type[Source]], Type[Source]]:
    """Class decorator registering a Source under a recipe ``type`` name."""

    def deco(cls: Type[Source]) -> Type[Source]:
        cls.type_name = cls.type_name or name
        _REGISTRY[name] = cls
        return cls

    return deco


def register_builtin(name: str, module: str) -> None:
    """Declare a built-in source module, imported lazily."""
    _BUILTIN[name] = module


def _entry_points():
    from importlib.metadata import entry_points

    eps = entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))  # pragma: no cover (old Python)


class UnknownSourceType(BrodenError, KeyError):
    """A recipe names a source ``type`` that no builder or plugin provides (a typo, usually)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get_source_class(name: str) -> Type[Source]:
    """The Source class for a recipe ``type``; raises KeyError listing the known names."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        for ep in _entry_points():
            if ep.name == name:
                cls = ep.load()
                _REGISTRY[name] = cls
                cls.type_name = cls.type_name or name
                break
    if name not in _REGISTRY:
        from ..suggest import did_you_mean

        known = available_sources()
        raise UnknownSourceType(f"unknown source type {name!r}{did_you_mean(str(name), known)} (known: {', '.join(known)})")
    return _REGISTRY[name]


def available_sources() -> list:
    names = set(_REGISTRY) | set(_BUILTIN)
    try:
        names |= {ep.name for ep in _entry_points()}
    except Exception:  # pragma: no cover
        pass
    return sorted(names)


__all__ = [
    "BadSourceItem", "ImageRecord", "Resolved", "Source", "SourceDataError", "SourceMissingError",
    "UnknownSourceType", "register_source", "register_builtin", "get_source_class", "available_sources",
]
