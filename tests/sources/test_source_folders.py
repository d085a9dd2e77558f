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
    bare = sorted(p.name for p in SOURCES.glob("*.py") if p.stem not in ("__init__", "base", "common", "decode", "downloadable", "entry", "manual", "terms"))
    assert not bare, f"sources that are bare modules, not folders: {bare}"


@pytest.mark.parametrize("name", sorted(_BUILTIN))
def test_licence_and_citation_come_from_the_folder_files(name):
    """The store records the LICENSE.md summary line and each CITATION.bib entry (read here plainly)."""
    import re

    folder = SOURCES / name
    cls = get_source_class(name)
    lines = [ln for ln in (folder / "LICENSE.md").read_text("utf-8").splitlines() if ln.startswith("**In one line:** ")]
    assert len(lines) == 1, f"{folder / 'LICENSE.md'}: needs exactly one '**In one line:** ...' line"
    assert cls.license == lines[0][len("**In one line:** "):] and cls.license
    bib = "\n".join(ln for ln in (folder / "CITATION.bib").read_text("utf-8").splitlines() if not ln.startswith("%"))
    titles = [t.replace("{", "").replace("}", "") for t in re.findall(r"^\s*title\s*=\s*\{(.*)\},?\s*$", bib, re.M)]
    years = re.findall(r"year\s*=\s*\{(\d{4})\}", bib)
    assert cls.citation.count(";") == max(len(titles) - 1, 0)
    for title, year in zip(titles, years):
        assert f"{title}, " in cls.citation and year in cls.citation, (name, title)
    assert bool(cls.citation) == bool(titles)
