"""The recipe format as a strict, typed schema (pydantic): one model for the recipe, one per source type.

Strict means: a key the schema does not know is an error (with "did you mean" the
nearest known key: ``cuont`` -> ``count``), and no value is coerced (``color: "false"``
is a string, not a boolean; ``size: 32.7`` is not an integer; ``count: abc`` is not a
number). Ranges are checked (``jpeg_quality`` 1..100, ``count`` >= 0, split names
``train``/``val`` with fractions summing to 1: what ``broden validate`` accepts).

The schema is the reference of the recipe format: ``docs/recipe.md`` is generated from
it (``python -m broden_builder.recipe``; a test checks that the file is up to date). A third-party
source type may declare its keys with a class attribute ``config_schema`` (a subclass of
:class:`SourceEntry`); without one, only the keys every entry shares are checked.

Source of the rules: the keys each source reads in its ``__init__`` (broden_builder/sources),
the store format (BRODEN_FORMAT.md: splits train/val, label PNG limits), Pillow's JPEG
quality range.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Dict, List, Literal, Mapping, Optional, Type, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .store.format import SPLITS
from .store.paths import UnsafePathError, safe_category, safe_component


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecipeModel(_Strict):
    """Top-level keys of a recipe."""

    name: str = Field("broden", description="store name (README.txt, build.json)")
    description: str = Field("", description="free text recorded in build.json")
    size: int = Field(224, ge=8, le=8192, description="image size in pixels (images are squashed to size x size)")
    segmentation_size: Optional[int] = Field(None, ge=1, le=8192,
                                             description="label PNG size in pixels (default size // 2)")
    min_frequency: int = Field(10, ge=0, description="a label is kept when it is in at least this many images")
    min_coverage: float = Field(0.5, ge=0, description="... and covers at least this many images' worth of pixels")
    splits: Union[float, Dict[str, float]] = Field(
        default_factory=lambda: {"train": 0.7, "val": 0.3},
        description="fractions per split (train, val), summing to 1; a number is the train fraction")
    color: bool = Field(True, description="add the colour category (11 colour names per pixel)")
    jpeg_quality: int = Field(75, ge=1, le=100,
                              description="JPEG quality of the store images (Pillow, 1..100; 75 as the original)")
    unify: Literal["original", "curated"] = Field(
        "original", description="label vocabulary: the original build's synonym tables and merge rule, or this "
                                "project's curated tables")
    allow_same_source_merges: Union[bool, str, List[str]] = Field(
        default_factory=list, description="sources (prefixes) whose labels may merge within one category: true, or "
                                          "their names; any other such merge stops the build")
    allow_empty: bool = Field(False, description="accept a build that writes no image (otherwise that is an error)")
    sources: List[Dict[str, Any]] = Field(default_factory=list, description="the source entries (see below)")

    @field_validator("splits")
    @classmethod
    def _splits(cls, v):
        items = {"train": v, "val": 1.0 - v} if isinstance(v, (int, float)) else dict(v)
        bad = [k for k in items if k not in SPLITS]
        if bad:
            raise ValueError(f"split names must be {' and '.join(SPLITS)} (what a store may hold), got {bad}")
        if not items or any(not (0.0 <= f <= 1.0) or math.isnan(f) for f in items.values()):
            raise ValueError(f"split fractions must lie in 0..1, got {items}")
        if abs(sum(items.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {items}")
        return v


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


def _category(v):
    """A category name is one safe file-name component (it becomes c_<category>.csv; issue 25)."""
    if v is not None:
        try:
            safe_category(v, "category")
        except UnsafePathError as e:
            raise ValueError(str(e)) from None
    return v


class _Downloadable(SourceEntry):
    path: str = Field(..., description="folder holding (or receiving) the source's files")
    download: Optional[bool] = Field(None, description="false: never download this source")
    downloads: Optional[str] = Field(None, description="folder for the downloaded archives (default PATH/.downloads)")


class SyntheticEntry(SourceEntry):
    """``type: synthetic``: generated scenes (demo, tests)."""

    count: int = Field(1000, ge=0, le=1_000_000, description="number of images (at most a million: the scenes "
                                                             "are listed in memory before any is drawn)")
    seed: int = Field(0, description="random seed")
    native_size: Optional[int] = Field(None, ge=8, le=8192, description="generated image size (default the store size)")


class PascalEntry(_Downloadable):
    """``type: pascal``: Pascal VOC 2010 with Pascal-Context objects and Pascal-Part parts."""

    categories: Optional[List[Literal["object", "part"]]] = Field(None, description="object, part (default both)")


class DtdEntry(_Downloadable):
    """``type: dtd``: the Describable Textures Dataset r1.0.1."""


class Ade20kEntry(_Downloadable):
    """``type: ade20k``: ADE20K (the 2016-07-26 release by default)."""

    version: Optional[Union[str, int]] = Field(None, description='"2016" (default) or "2021"')


class OpenSurfacesEntry(_Downloadable):
    """``type: opensurfaces``: OpenSurfaces materials."""

    photos_url: Optional[str] = Field(None, description="where the photos are fetched from")
    download_workers: Optional[int] = Field(None, ge=1, le=64, description="parallel photo downloads (default 8)")


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

    @field_validator("category", "stuff_category")
    @classmethod
    def _categories(cls, v):
        return _category(v)


class FolderEntry(SourceEntry):
    """``type: folder``: your own images with masks (or image-level labels) and a value -> name table."""

    images: str = Field(..., description="image folder")
    labels: str = Field(..., description="CSV table value,name (or color,name)")
    category: str = Field(..., description="category of the labels")
    masks: Optional[str] = Field(None, description="mask folder (pixel labels); without it, image-level labels")
    mask_suffix: Optional[str] = None
    unlabeled: Optional[Union[int, List[int]]] = None
    missing_masks: Optional[Literal["error", "skip"]] = None
    exif_orientation: Optional[bool] = Field(None, description="apply the images' EXIF orientation (default: "
                                                               "yes for image-level labels, no with masks)")

    @field_validator("category")
    @classmethod
    def _categories(cls, v):
        return _category(v)


class HFEntry(SourceEntry):
    """``type: hf``: a Hugging Face dataset with a mask column or a label column."""

    dataset: str = Field(..., description="hub id or local path")
    split: Optional[str] = None
    image_column: Optional[str] = None
    mask_column: Optional[str] = None
    label_column: Optional[str] = None
    category: Optional[str] = None
    id_column: Optional[str] = None
    unlabeled: Optional[Union[int, List[int]]] = None
    limit: Optional[int] = Field(None, ge=0)
    names: Optional[Union[List[str], Dict[int, str], Dict[str, str]]] = None

    @field_validator("category")
    @classmethod
    def _categories(cls, v):
        return _category(v)


SOURCE_SCHEMAS: Dict[str, Type[SourceEntry]] = {
    "synthetic": SyntheticEntry, "pascal": PascalEntry, "dtd": DtdEntry, "ade20k": Ade20kEntry,
    "opensurfaces": OpenSurfacesEntry, "coco": CocoEntry, "folder": FolderEntry, "hf": HFEntry,
}


class _Open(SourceEntry):
    model_config = ConfigDict(extra="allow", strict=True)


def _schema_for(type_name: str) -> Type[SourceEntry]:
    if type_name in SOURCE_SCHEMAS:
        return SOURCE_SCHEMAS[type_name]
    try:
        from .sources import get_source_class

        cls = get_source_class(type_name)
    except Exception:  # unknown types are reported by the build, naming the known ones
        return _Open
    schema = getattr(cls, "config_schema", None)
    return schema if isinstance(schema, type) and issubclass(schema, BaseModel) else _Open


def _messages(e: ValidationError, model: Type[BaseModel], where: str) -> List[str]:
    out = []
    known = list(model.model_fields)
    for err in e.errors():
        key = err["loc"][0] if err["loc"] else ""
        path = where + str(key)
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(sorted(known))})"
            out.append(f"{path}: unknown key{hint}")
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        got = err.get("input")
        shown = "" if err["type"] == "missing" or len(err["loc"]) > 1 else f" (got {got!r})"
        out.append(f"{path}: {msg}{shown}")
    # a union yields one message per branch: keep the first per key
    seen, uniq = set(), []
    for m in out:
        k = m.split(":", 1)[0]
        if k not in seen:
            seen.add(k)
            uniq.append(m)
    return uniq


def check_recipe_mapping(data: Any, origin: str, error: type) -> None:
    """Validate a parsed recipe against the schema; raise ``error`` naming the file, key and value."""
    if not isinstance(data, Mapping):
        raise error(f"{origin}: a recipe must be a mapping of keys (name, size, sources, ...), "
                    f"got {type(data).__name__}")
    problems: List[str] = []
    try:
        RecipeModel.model_validate(dict(data))
    except ValidationError as e:
        problems += _messages(e, RecipeModel, "")
    sources = data.get("sources")
    if isinstance(sources, list):
        for i, s in enumerate(sources):
            problems += check_source_entry(s, f"sources[{i}].")
    if problems:
        raise error(f"{origin}: " + ("; ".join(problems) if len(problems) <= 3
                                     else "\n  " + "\n  ".join(problems)))


def check_source_entry(entry: Any, where: str = "") -> List[str]:
    """Problems of one source entry (empty when it follows its type's schema)."""
    if not isinstance(entry, Mapping):
        return [f"{where.rstrip('.')}: a source entry must be a mapping with a 'type', got {entry!r}"]
    t = entry.get("type")
    if not isinstance(t, str) or not t:
        return [f"{where}type: required (a source type such as synthetic, pascal, coco, folder)"]
    model = _schema_for(t)
    try:
        model.model_validate(dict(entry))
    except ValidationError as e:
        return _messages(e, model, where)
    return []


def _typename(ann) -> str:
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Union:
        names = [_typename(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" (optional)" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (list, List):
        return f"list of {_typename(args[0])}" if args else "list"
    if origin in (dict, Dict):
        return f"mapping {_typename(args[0])} -> {_typename(args[1])}" if args else "mapping"
    return {"str": "text", "int": "integer", "float": "number", "bool": "true/false", "Any": "any"}.get(
        getattr(ann, "__name__", str(ann)), getattr(ann, "__name__", str(ann)))


def schema_markdown(recipe_defaults: Optional[Mapping[str, Any]] = None) -> str:
    """The recipe format as Markdown, generated from the models (docs/recipe.md).

    ``recipe_defaults``: the defaults of the Recipe dataclass (the truth for top-level keys;
    recipe.recipe_markdown passes them, so that this module does not import recipe.py).
    """
    recipe_defaults = dict(recipe_defaults or {})

    def rows(model: Type[BaseModel], skip=()) -> List[str]:
        lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, f in model.model_fields.items():
            if name in skip:
                continue
            ann = _typename(f.annotation)
            if f.is_required():
                default = "required"
            elif model is RecipeModel and name in recipe_defaults:  # the Recipe dataclass is the truth
                default = f"`{recipe_defaults[name]!r}`"
            elif f.default_factory is not None:
                default = f"`{f.default_factory()!r}`"
            else:
                default = "" if f.default is None else f"`{f.default!r}`"
            lines.append(f"| `{name}` | `{ann}` | {default} | {f.description or ''} |")
        return lines

    out = ["# Recipe format", "",
           "Generated from `broden_builder/recipe_schema.py` (the schema every recipe is checked against; "
           "regenerate with `python -m broden_builder.recipe > docs/recipe.md`).", "",
           "Unknown keys are errors (with the nearest known key suggested); values are never coerced "
           "(`color: \"false\"` is refused, not read as true).", "", "## Top level", ""]
    out += rows(RecipeModel)
    out += ["", "## Keys of every source entry", ""] + rows(SourceEntry)
    for t, m in SOURCE_SCHEMAS.items():
        out += ["", f"## `type: {t}`", "", (m.__doc__ or "").strip(), ""]
        out += rows(m, skip=SourceEntry.model_fields)
    return "\n".join(out) + "\n"

