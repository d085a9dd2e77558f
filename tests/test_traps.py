"""No silent traps: an empty build, an empty store, and a build whose every source is missing.

Oracles: the rules as the issue states them (0 images written is an error unless the recipe asks
for an empty store; validate calls an empty store invalid; --allow-missing with every source
missing names each missing source), checked through the public CLI and build function.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broden_builder.build import BuildError, build_store
from broden_builder.recipe import RecipeError, recipe_from_dict
from broden_builder.store.validate import validate_store


def _recipe(sources, **extra):
    return recipe_from_dict({"name": "t", "size": 32, "segmentation_size": 16, "min_frequency": 1,
                             "min_coverage": 0.0, "sources": sources, **extra})


def test_build_of_zero_images_fails(tmp_path):
    with pytest.raises(BuildError, match="wrote 0 images.*allow_empty: true"):
        build_store(_recipe([{"type": "synthetic", "count": 0}]), tmp_path / "s", quiet=True)
    assert not (tmp_path / "s" / "index.csv").exists(), "a failed empty build must not look complete"


def test_empty_store_on_request_and_validate_calls_an_empty_store_invalid(tmp_path):
    out = tmp_path / "s"
    report = build_store(_recipe([{"type": "synthetic", "count": 0}], allow_empty=True), out, quiet=True)
    assert report.images == 0 and (out / "index.csv").is_file()
    problems = validate_store(out)
    assert [p.severity for p in problems if "no images" in p.message] == ["warning"]
    # the same store without the recipe's request is invalid
    import json

    info_path = out / "build.json"
    info = json.loads(info_path.read_text())
    del info["recipe"]["allow_empty"]
    info_path.write_text(json.dumps(info))
    errors = [p for p in validate_store(out) if p.severity == "error"]
    assert any("no images" in p.message for p in errors)
    run = subprocess.run([sys.executable, "-m", "broden_builder.cli", "validate", str(out), "-q"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "no images" in (run.stdout + run.stderr)


def test_allow_empty_must_be_a_boolean():
    with pytest.raises(RecipeError, match="allow_empty.*boolean"):
        _recipe([], allow_empty="yes")


def test_allow_missing_with_every_source_missing_names_them(tmp_path):
    sources = [{"type": "dtd", "path": str(tmp_path / "no_dtd")}, {"type": "pascal", "path": str(tmp_path / "no_voc")}]
    with pytest.raises(BuildError) as e:
        build_store(_recipe(sources), tmp_path / "s", allow_missing=True, quiet=True)
    msg = str(e.value)
    assert "every source" in msg and "dtd" in msg and "pascal" in msg
    assert str(tmp_path / "no_dtd") in msg and str(tmp_path / "no_voc") in msg
    assert not (tmp_path / "s" / "index.csv").exists()


def test_unknown_source_type_is_a_recipe_error_with_the_nearest_names(tmp_path):
    """`type: foldr` is a typo, not a missing source: an error even under --allow-missing."""
    for allow in (False, True):
        with pytest.raises(BuildError, match=r"sources\[1\]: unknown source type 'foldr'; did you mean 'folder'\?"):
            build_store(_recipe([{"type": "synthetic", "count": 2}, {"type": "foldr", "path": "x"}]), tmp_path / "s",
                        allow_missing=allow, quiet=True)


def test_find_suggests_the_suffixed_label(tmp_path):
    from broden_builder import BrodenStore

    out = tmp_path / "s"
    build_store(_recipe([{"type": "synthetic", "count": 6}]), out, quiet=True)
    with pytest.raises(KeyError, match=r"no label named 'red'.*did you mean 'red-c'\?"):
        BrodenStore(out).label("red")
    run = subprocess.run([sys.executable, "-m", "broden_builder.cli", "find", str(out), "red", "-q"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "did you mean 'red-c'?" in run.stderr
    run = subprocess.run([sys.executable, "-m", "broden_builder.cli", "find", str(out), "houes", "-q"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "did you mean 'house'?" in run.stderr
