"""Build recipes: YAML files turned into a frozen, validated configuration."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .errors import BrodenError
from .yamlfile import read_yaml
from .recipe_schema import check_recipe_mapping

_KEYS = {"name", "size", "segmentation_size", "min_frequency", "min_coverage", "splits", "color",
         "sources", "jpeg_quality", "description", "unify", "allow_same_source_merges", "allow_empty"}
#: How labels of different sources are unified (docs/format.md, "How the original build unified its sources"; broden_builder.unify).
UNIFY_RULES = ("original", "curated")


class RecipeError(BrodenError, ValueError):
    """A recipe is malformed; names the file and the key."""


@dataclass(frozen=True)
class Recipe:
    """A build recipe. ``sources`` is a tuple of source entries ``{type: NAME, ...}``."""

    name: str = "broden"
    size: int = 224
    segmentation_size: int = 112
    min_frequency: int = 10
    min_coverage: float = 0.5
    splits: tuple = (("train", 0.7), ("val", 0.3))
    color: bool = True
    jpeg_quality: int = 75
    sources: tuple = ()
    description: str = ""
    #: a build that writes no image is an error unless the recipe asks for an empty store
    allow_empty: bool = False
    path: Optional[str] = None
    #: ``original`` (the original build's synonym tables and merge rule) or ``curated``.
    unify: str = "original"
    #: Sources whose labels may merge within one category: True (all), or a tuple of source keys.
    allow_same_source_merges: Union[bool, tuple] = ()

    @property
    def train_fraction(self) -> float:
        return dict(self.splits).get("train", 0.0)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "size": self.size, "segmentation_size": self.segmentation_size,
            "min_frequency": self.min_frequency, "min_coverage": self.min_coverage,
            "splits": dict(self.splits), "color": self.color, "jpeg_quality": self.jpeg_quality,
            "sources": [dict(s) for s in self.sources], "description": self.description,
            "unify": self.unify,
            "allow_same_source_merges": (self.allow_same_source_merges if isinstance(self.allow_same_source_merges, bool)
                                         else list(self.allow_same_source_merges)),
            **({"allow_empty": True} if self.allow_empty else {}),
        }

    def split_of(self, image_path: str) -> str:
        """Deterministic split from md5 of the image path: cumulative fractions in recipe order."""
        from .store.format import split_hash

        h = split_hash(image_path)
        acc = 0.0
        names = [n for n, _ in self.splits]
        for name, frac in self.splits:
            acc += frac
            if h <= acc:
                return name
        return names[-1]


def _splits(data: Mapping[str, Any], origin: str) -> tuple:
    """((split name, fraction), ...) from ``splits`` (a mapping, or a train fraction); fractions >= 0 summing to 1."""
    splits = data.get("splits", {"train": 0.7, "val": 0.3})
    if isinstance(splits, (int, float)):
        splits = {"train": float(splits), "val": 1.0 - float(splits)}
    if not isinstance(splits, Mapping) or not splits:
        raise RecipeError(f"{origin}: splits must map split names to fractions, got {splits!r}")
    try:
        split_items = tuple((str(k), float(v)) for k, v in splits.items())
    except (TypeError, ValueError):
        raise RecipeError(f"{origin}: split fractions must be numbers, got {splits!r}") from None
    if abs(sum(v for _, v in split_items) - 1.0) > 1e-6 or any(v < 0 for _, v in split_items):
        raise RecipeError(f"{origin}: split fractions must be >= 0 and sum to 1, got {dict(split_items)}")
    return split_items


def _sources(data: Mapping[str, Any], origin: str, base_dir: Optional[Path]) -> list:
    """The ``sources`` entries as dicts, relative paths resolved against ``base_dir``."""
    sources = data.get("sources", [])
    if not isinstance(sources, list):
        raise RecipeError(f"{origin}: sources must be a list of {{type: NAME, ...}} entries")
    norm = []
    for i, s in enumerate(sources):
        if not isinstance(s, Mapping) or "type" not in s:
            raise RecipeError(f"{origin}: sources[{i}] must be a mapping with a 'type', got {s!r}")
        s = dict(s)
        for k in ("path", "annotations", "images", "masks", "labels"):
            if k in s and isinstance(s[k], str) and base_dir is not None:
                p = Path(s[k]).expanduser()
                if not p.is_absolute():
                    s[k] = str((base_dir / p))
        norm.append(s)
    return norm


def _merge_allowance(data: Mapping[str, Any], origin: str):
    """``allow_same_source_merges``: True/False, or a tuple of source names (prefixes)."""
    allow = data.get("allow_same_source_merges", ())
    if isinstance(allow, str):
        allow = [allow]
    if not isinstance(allow, (bool, list, tuple)) or (not isinstance(allow, bool) and not all(isinstance(a, str) for a in allow)):
        raise RecipeError(f"{origin}: allow_same_source_merges must be true, false or a list of source names "
                          f"(prefixes), got {allow!r}")
    return allow if isinstance(allow, bool) else tuple(allow)


def recipe_from_dict(data: Mapping[str, Any], origin: str = "<recipe>", base_dir: Optional[Path] = None) -> Recipe:
    """Check a mapping against the strict schema (recipe_schema.py: unknown keys, types, ranges;
    RecipeError naming the file and key), build a Recipe; relative paths resolve against ``base_dir``."""
    check_recipe_mapping(data, origin, RecipeError)
    unknown = set(data) - _KEYS
    if unknown:
        raise RecipeError(f"{origin}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")

    def num(key, typ, default, minimum=None):
        v = data.get(key, default)
        try:
            v = typ(v)
        except (TypeError, ValueError):
            raise RecipeError(f"{origin}: {key} must be a {typ.__name__}, got {data.get(key)!r}") from None
        if minimum is not None and v < minimum:
            raise RecipeError(f"{origin}: {key} must be >= {minimum}, got {v}")
        return v

    size = num("size", int, 224, 1)
    seg = num("segmentation_size", int, max(1, size // 2), 1)
    split_items = _splits(data, origin)
    norm = _sources(data, origin, base_dir)
    rule = str(data.get("unify", "original"))
    if rule not in UNIFY_RULES:
        raise RecipeError(f"{origin}: unify must be one of {', '.join(UNIFY_RULES)}, got {data.get('unify')!r}")
    allow = _merge_allowance(data, origin)
    return Recipe(
        name=str(data.get("name", "broden")),
        size=size,
        segmentation_size=seg,
        min_frequency=num("min_frequency", int, 10, 0),
        min_coverage=num("min_coverage", float, 0.5, 0),
        splits=split_items,
        color=bool(data.get("color", True)),
        jpeg_quality=num("jpeg_quality", int, 75, 1),
        sources=tuple(norm),
        description=str(data.get("description", "")),
        allow_empty=_flag(data, "allow_empty", origin),
        path=origin,
        unify=rule,
        allow_same_source_merges=allow,
    )


def _flag(data: Mapping[str, Any], key: str, origin: str) -> bool:
    v = data.get(key, False)
    if not isinstance(v, bool):
        raise RecipeError(f"{origin}: {key} must be true or false, got {v!r}")
    return v


def load_recipe(path: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None) -> Recipe:
    """Read a YAML recipe. Relative source paths resolve against the current directory."""
    path = Path(path)
    data = read_yaml(path, RecipeError, "recipe file")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys (name, size, sources, ...), "
                          f"got a YAML {type(data).__name__}")
    data = dict(data)
    data.update(overrides or {})
    return recipe_from_dict(data, origin=str(path), base_dir=Path.cwd())


def recipe_markdown() -> str:
    """docs/recipe.md: the schema's tables, with the Recipe dataclass's defaults."""
    import dataclasses

    from .recipe_schema import schema_markdown

    defaults = {f.name: f.default for f in dataclasses.fields(Recipe)
                if f.default is not dataclasses.MISSING and f.name not in ("sources", "splits", "path")}
    return schema_markdown(defaults)


if __name__ == "__main__":  # pragma: no cover
    print(recipe_markdown(), end="")
