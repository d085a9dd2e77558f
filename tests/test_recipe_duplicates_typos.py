"""A recipe means one thing: keys given twice and misspelt source types are refused (issue 15, item 8).

Oracle: the YAML texts below, whose intent is ambiguous by construction (PyYAML alone keeps the
last of two equal keys silently; an unknown type near a known one is a typo, which
--allow-missing would otherwise skip as a "missing" source and build without a word).
"""
from __future__ import annotations

import pytest

from broden_builder.cli import main as broden
from broden_builder.recipe import read_yaml

HEAD = "name: t\nsize: 32\nsegmentation_size: 16\nmin_frequency: 1\nmin_coverage: 0\n"


@pytest.mark.parametrize("text, key", [
    (HEAD + "size: 64\nsources: [{type: synthetic, count: 3}]\n", "size"),
    (HEAD + "sources: [{type: synthetic, count: 3, count: 4}]\n", "count"),
    (HEAD + "sources:\n  - type: synthetic\n    seed: 1\n    seed: 2\n", "seed"),
])
@pytest.mark.parametrize("command", ["build", "plan"])
def test_a_key_given_twice_is_refused_naming_it(tmp_path, capsys, text, key, command):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    argv = ["build", str(recipe), "--out", str(tmp_path / "out")] + (["--plan"] if command == "plan" else [])
    assert broden(argv) == 1
    err = capsys.readouterr().err
    assert "r.yaml" in err and f"key {key!r} given twice" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "index.csv").exists()


def test_add_source_entry_with_a_key_given_twice_is_refused(synthetic_store, tmp_path, capsys):
    entry = tmp_path / "e.yaml"
    entry.write_text("type: folder\nimages: a\nimages: b\ncategory: object\n")
    assert broden(["add", str(synthetic_store), "--source", str(entry)]) == 1
    assert "key 'images' given twice" in capsys.readouterr().err


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("base: &b {count: 3, seed: 1}\nsrc: {<<: *b, seed: 2}\n")
    assert read_yaml(p) == {"base": {"count": 3, "seed": 1}, "src": {"count": 3, "seed": 2}}
