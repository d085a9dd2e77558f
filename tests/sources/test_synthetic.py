"""Builds are deterministic and resume after a kill."""
from __future__ import annotations

import filecmp
import os
from pathlib import Path

import numpy as np
import pytest

from broden_builder import BrodenStore
from broden_builder.sources.synthetic import source as synth
from conftest import build_synthetic


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def test_same_seed_builds_are_byte_identical(tmp_path):
    build_synthetic(tmp_path / "a", count=24)
    build_synthetic(tmp_path / "b", count=24, workers=2)
    ta, tb = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta)
    build_synthetic(tmp_path / "c", count=24, seed=1)
    assert _tree(tmp_path / "c").keys() != ta.keys()


def test_killed_build_resumes_to_identical_store(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    build_synthetic(clean, count=30)
    real = synth.generate_scene
    calls = {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kw)

    monkeypatch.setattr(synth, "generate_scene", dying)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        build_synthetic(killed, count=30)
    assert not (killed / "index.csv").exists(), "a half-written store must not look complete"
    staged = list((killed / ".build" / ".staging" / "native").glob("*.npz"))
    assert len(staged) == 12
    calls["n"] = 0
    resumed_calls = []

    def counting(*args, **kw):
        resumed_calls.append(args[1])
        return real(*args, **kw)

    monkeypatch.setattr(synth, "generate_scene", counting)
    build_synthetic(killed, count=30)
    assert len(resumed_calls) == 18, "images already written must not be redone"
    ta, tb = _tree(clean), _tree(killed)
    assert ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta)


def test_synthetic_store_has_all_six_categories(synthetic_store):
    s = BrodenStore(synthetic_store)
    assert set(s.categories) == {"color", "object", "part", "material", "scene", "texture"}
    assert s.image_level_categories == {"scene", "texture"}
    assert all(s.image_labels(i, "scene") for i in range(len(s)))
    names = {l.name for l in s.labels}
    assert {"house", "car", "grass", "park-s", "striped", "red-c", "wheel"} <= names


def corner_sample(plane: np.ndarray, size: int) -> np.ndarray:
    """By hand: row i reads row floor(i * (n - 1) / (size - 1) + 0.5) (docs/format.md, rule 7), likewise columns."""
    idx = [int(i * (plane.shape[0] - 1) / (size - 1) + 0.5) for i in range(size)]
    jdx = [int(j * (plane.shape[1] - 1) / (size - 1) + 0.5) for j in range(size)]
    return plane[np.ix_(idx, jdx)]


def test_synthetic_labels_match_the_generator(synthetic_store):
    """The object plane of the store equals the generator's plane, renamed and downsampled (nearest)."""
    s = BrodenStore(synthetic_store)
    row = s.rows[0]
    index = int(row.image.rsplit("_", 1)[1].split(".")[0])
    rgb, obj, part, material, scene, texture = synth.generate_scene(0, index, 64)
    plane = s.pixel_layers(0, "object")[0]
    # the original's shrink (scipy zoom order 0, corner-aligned): output i samples native round(i * 63 / 31)
    native = corner_sample(obj, 32)
    for code, name in enumerate(synth.OBJECTS, start=1):
        if (native == code).any():
            assert (plane[native == code] == s.label(name).number).all()
    assert (plane[native == 0] == 0).all()
    assert s.image_labels(0, "scene") == [s.label(synth.SCENE_NAMES[scene - 1] + "-s").number]


def test_codes_without_a_name_become_unlabeled(tmp_path, monkeypatch):
    """A source code missing from the vocabulary (the largest one here) must not borrow another label's number."""
    vocab = synth.SyntheticSource.vocabulary

    def without_bar(self):
        v = vocab(self)
        del v["object"][len(synth.OBJECTS)]  # 'person', the largest object code
        return v

    monkeypatch.setattr(synth.SyntheticSource, "vocabulary", without_bar)
    build_synthetic(tmp_path / "s", count=30)
    s = BrodenStore(tmp_path / "s")
    assert "person" not in {l.name for l in s.labels}
    bar_code = len(synth.OBJECTS)
    checked = 0
    for row in s.rows:
        index = int(row.image.rsplit("_", 1)[1].split(".")[0])
        obj = corner_sample(synth.generate_scene(0, index, 64)[1], 32)
        if (obj == bar_code).any():
            plane = s.pixel_layers(row.index, "object")[0] if s.rows[row.index].cells["object"] else np.zeros_like(obj)
            assert (plane[obj == bar_code] == 0).all()
            checked += 1
    assert checked > 0


def test_partial_build_of_another_recipe_is_not_resumed(tmp_path, monkeypatch):
    real = synth.generate_scene
    calls = {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kw)

    monkeypatch.setattr(synth, "generate_scene", dying)
    with pytest.raises(KeyboardInterrupt):
        build_synthetic(tmp_path / "s", count=12)
    monkeypatch.setattr(synth, "generate_scene", real)
    from broden_builder.build import BuildError
    with pytest.raises(BuildError, match="different segmentation_size, size"):
        build_synthetic(tmp_path / "s", count=12, size=48, seg=24)
    build_synthetic(tmp_path / "s", count=12)  # the same recipe resumes
    assert len(BrodenStore(tmp_path / "s")) == 12


def test_sources_disagreeing_on_a_category_level_are_refused(tmp_path):
    from broden_builder.build import BuildError, build_store
    from broden_builder.recipe import recipe_from_dict
    from broden_builder.sources.base import ImageRecord, Resolved, Source

    class ObjectTags(Source):
        """Image-level 'object' tags: conflicts with the synthetic source's object masks."""
        type_name = prefix = "tags"

        def vocabulary(self):
            return {"object": {1: ("disc",)}}

        def records(self):
            return [ImageRecord("t0")]

        def resolve(self, record):
            return Resolved(image=np.zeros((8, 8, 3), np.uint8), image_level={"object": [1]})

        def image_level_categories(self):
            return frozenset({"object", "scene", "texture"})

    recipe = recipe_from_dict({"size": 32, "sources": [{"type": "synthetic", "count": 2}]})
    sources = [synth.SyntheticSource({"count": 2}, 32, 16), ObjectTags({}, 32, 16)]
    with pytest.raises(BuildError, match="sources disagree on category 'object': synthetic labels it pixel, tags image-level"):
        build_store(recipe, tmp_path / "s", sources=sources, quiet=True)
