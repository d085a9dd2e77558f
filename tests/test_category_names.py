"""Category names become file names (``c_<category>.csv``, ``<image>_<category>.png``): each is one
safe component, checked by the recipe schema, the build (any source type), ``broden add``, the
writer and the reader (issue 25, kind 2).

Oracle: the file system after the command (no file appears outside --out, nothing named
``planted*`` anywhere under tmp_path) and the culprit named in one ``error:`` line.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from broden_builder.build import BuildError, category_levels
from broden_builder.cli import main as broden
from broden_builder.recipe_schema import check_source_entry
from broden_builder.store.errors import StoreFormatError
from broden_builder.store.paths import UnsafePathError, safe_category
from broden_builder.store.reader import BrodenStore
from test_folder import make_folder

HOSTILE = ["../../../../PLANTED", "a/b", "..", ".hidden", "a\\b", "x;y", "obj(3)", "", "with space"]


def _planted(root: Path) -> list:
    return [p for p in root.rglob("*") if "planted" in p.name.lower()]


@pytest.mark.parametrize("category", ["../../../../PLANTED", "a/b", "../PLANTED"])
def test_build_refuses_a_category_that_is_not_one_component(tmp_path, capsys, category):
    src = tmp_path / "deep" / "er" / "src"
    make_folder(src)
    out = tmp_path / "deep" / "er" / "out" / "store"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"size": 32, "min_frequency": 1, "sources": [{
        "type": "folder", "images": str(src / "images"), "masks": str(src / "masks"),
        "labels": str(src / "labels.csv"), "category": category}]}))
    rc = broden(["build", str(recipe), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "this is a bug" not in err
    assert "category" in err and repr(category) in err and str(recipe) in err, err
    assert _planted(tmp_path) == [] and not (tmp_path / "planted.csv").exists()
    assert not out.exists() or not any(out.glob("c_*.csv"))


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_category_rule(name):
    with pytest.raises(UnsafePathError):
        safe_category(name)


@pytest.mark.parametrize("name", ["object", "part", "material", "scene", "texture", "color", "action", "my-cat_2"])
def test_ordinary_category_names_pass(name):
    assert safe_category(name) == name
    assert check_source_entry({"type": "folder", "images": "i", "labels": "l.csv", "category": name}) == []


@pytest.mark.parametrize("entry", [
    {"type": "coco", "annotations": "a.json", "images": "i", "category": "../x"},
    {"type": "coco", "annotations": "a.json", "images": "i", "stuff_category": "a/b"},
    {"type": "hf", "dataset": "d", "category": "../../x"},
])
def test_schema_checks_every_category_key(entry):
    problems = check_source_entry(entry)
    assert problems and "category" in problems[0] and "not a single safe" in problems[0], problems


class _PluginSource:
    """A source type outside the schema (a plugin): its vocabulary is checked by the build itself."""
    key = "plugin"

    def vocabulary(self):
        return {"../../escape": {1: ("thing",)}}

    def image_level_categories(self):
        return frozenset()


def test_build_checks_categories_of_any_source_type():
    with pytest.raises(BuildError, match=r"plugin: category '\.\./\.\./escape' is not a single safe"):
        category_levels([_PluginSource()])


@pytest.mark.parametrize("header", ["../../outside", "a/b"])
def test_reader_confines_category_columns_of_index_csv(synthetic_store, tmp_path, capsys, header):
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    outside = tmp_path / "c_..csv"  # what c_{../../outside}.csv could reach is checked as never read
    index = store / "index.csv"
    lines = index.read_text().splitlines()
    cols = lines[0].split(",")
    cols[-1] = header
    index.write_text("\n".join([",".join(cols)] + lines[1:]) + "\n")
    with pytest.raises(StoreFormatError, match=r"index\.csv.*category column"):
        BrodenStore(store)
    for cmd in (["validate", str(store)], ["find", str(store), "dog"]):
        rc = broden(cmd)
        err = capsys.readouterr()
        assert rc == 1, (cmd, err)
        assert "Traceback" not in err.err and "this is a bug" not in err.err
        assert "index.csv" in err.err + err.out and header in err.err + err.out
    assert not outside.exists()
