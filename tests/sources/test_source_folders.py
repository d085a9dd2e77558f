"""Every built-in source is a folder ``broden_builder/sources/<name>/`` (the TFDS pattern) with its
builder (``source.py``), its recipe keys (``schema.py``), ``checksums.tsv``, ``LICENSE.md``,
``CITATION.bib``, and an offline test with dummy data here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from broden_builder.download.registry import load_checksums
from broden_builder.sources import _BUILTIN, get_source_class

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "broden_builder" / "sources"


@pytest.mark.parametrize("name", sorted(_BUILTIN))
def test_source_folder_is_complete(name):
    folder = SOURCES / name
    assert folder.is_dir() and _BUILTIN[name] == f"broden_builder.sources.{name}"
    for f in ("__init__.py", "source.py", "schema.py", "checksums.tsv", "LICENSE.md", "CITATION.bib"):
        assert (folder / f).is_file() and (folder / f).stat().st_size > 0, f"{folder / f} is missing or empty"
    load_checksums(folder / "checksums.tsv")  # parses (may list nothing: user-data sources download nothing)
    cls = get_source_class(name)
    assert cls.__module__ == f"broden_builder.sources.{name}.source"  # the builder is not in __init__.py
    assert cls.config_schema is not None and cls.config_schema.__module__ == f"broden_builder.sources.{name}.schema"
    test = Path(__file__).parent / f"test_{name}.py"
    assert test.is_file(), f"{name}: no offline test {test}"
    tests = [n.name for n in ast.walk(ast.parse(test.read_text("utf-8"))) if isinstance(n, ast.FunctionDef)
             and n.name.startswith("test_")]
    assert tests, f"{test} holds no test"


def test_no_source_is_a_bare_module():
    bare = sorted(p.name for p in SOURCES.glob("*.py") if p.stem not in ("__init__", "base", "common", "decode", "downloadable", "entry", "manual"))
    assert not bare, f"sources that are bare modules, not folders: {bare}"
