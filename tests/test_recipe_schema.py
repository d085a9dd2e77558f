"""The recipe schema (issue 15, item 8): strict types, ranges, did-you-mean, and the docs it generates."""
from __future__ import annotations

from pathlib import Path

import pytest

from broden_builder.recipe import RecipeError, load_recipe, recipe_from_dict, recipe_markdown
from broden_builder.recipe_schema import SOURCE_SCHEMAS
from conftest import REPO


@pytest.mark.parametrize("data,fragment", [
    ({"sources": [{"type": "synthetic", "cuont": 10}]}, "sources[0].cuont: unknown key (did you mean 'count'?)"),
    ({"color": "false"}, "color: Input should be a valid boolean (got 'false')"),
    ({"jpeg_quality": 1000}, "jpeg_quality"),
    ({"size": 32.7}, "size: Input should be a valid integer (got 32.7)"),
    ({"sources": [{"type": "synthetic", "count": -5}]}, "sources[0].count"),
    ({"splits": {"test": 1.0}}, "split names must be train and val"),
    ({"splits": {"train": 0.5, "val": 0.4}}, "sum to 1"),
    ({"min_frequency": "10"}, "min_frequency"),
    ({"sources": [{"type": "coco", "images": "i", "annotations": "a", "crowd": "maybe"}]}, "sources[0].crowd"),
    ({"sources": [{"type": "folder", "images": "i", "labels": "l.csv", "category": "x", "mask": "m"}]},
     "did you mean 'masks'"),
    ({"unify": "loose"}, "unify"),
])
def test_recipe_examples_are_refused(data, fragment):
    with pytest.raises(RecipeError) as e:
        recipe_from_dict(data, "r.yaml")
    assert str(e.value).startswith("r.yaml: ") and fragment in str(e.value)


def test_every_shipped_recipe_follows_the_schema():
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        load_recipe(path)


def test_valid_values_pass_unchanged():
    r = recipe_from_dict({"size": 64, "splits": {"train": 0.5, "val": 0.5}, "color": False, "jpeg_quality": 100,
                          "sources": [{"type": "synthetic", "count": 0, "prefix": "my-shapes"}]}, "r.yaml")
    assert (r.size, r.color, r.jpeg_quality, dict(r.splits)) == (64, False, 100, {"train": 0.5, "val": 0.5})


def test_schema_documents_the_format():
    doc = (REPO / "docs" / "recipe.md").read_text("utf-8")
    assert doc == recipe_markdown(), "docs/recipe.md is stale: python -m broden_builder.recipe > docs/recipe.md"
    for t in SOURCE_SCHEMAS:
        assert f"## `type: {t}`" in doc


def test_every_key_has_a_meaning():
    """docs/recipe.md: no key with an empty "meaning" cell (issue 24: most coco and hf keys had none)."""
    doc = (REPO / "docs" / "recipe.md").read_text("utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    assert len(rows) > 60
    empty = [r.split("|")[1].strip() for r in rows if not r.rstrip().rstrip("|").split("|")[-1].strip()]
    assert not empty, f"keys without a meaning: {empty}"
