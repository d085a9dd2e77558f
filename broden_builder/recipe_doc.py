"""``docs/recipe.md``, generated from the recipe schema (recipe_schema.py) and the Recipe defaults (recipe.py).

Regenerate with ``python -m broden_builder.recipe_doc > docs/recipe.md`` (a test checks it is up to date).
Above both modules, so neither imports the other's documentation needs.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Dict, List, Literal, Type, Union

from pydantic import BaseModel

from .recipe import Recipe
from .recipe_schema import SOURCE_SCHEMAS, RecipeModel, SourceEntry


def _typename(ann) -> str:
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


def schema_markdown() -> str:
    """The recipe format as Markdown, generated from the models (docs/recipe.md)."""
    recipe_defaults = {f.name: f.default for f in dataclasses.fields(Recipe)
                       if f.default is not dataclasses.MISSING and f.name not in ("sources", "splits", "path")}

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
           "regenerate with `python -m broden_builder.recipe_doc > docs/recipe.md`).", "",
           "Unknown keys are errors (with the nearest known key suggested); values are never coerced "
           "(`color: \"false\"` is refused, not read as true).", "", "## Top level", ""]
    out += rows(RecipeModel)
    out += ["", "## Keys of every source entry", ""] + rows(SourceEntry)
    for t, m in SOURCE_SCHEMAS.items():
        out += ["", f"## `type: {t}`", "", (m.__doc__ or "").strip(), ""]
        out += rows(m, skip=SourceEntry.model_fields)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(schema_markdown(), end="")
