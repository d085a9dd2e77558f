"""The unifier's rules on hand-made examples, and recipe validation."""
import pytest

from broden_builder.recipe import RecipeError, load_recipe, recipe_from_dict
from broden_builder.unify import SourceLabel, normalize_name, unify


def test_name_normalisation():
    assert normalize_name("Street", "scene") == "street-s"
    assert normalize_name("shop/ store - indoor", "scene") == "shop- store-indoor-s"
    assert normalize_name("Red", "color") == "red-c"
    assert normalize_name("  Wall  Socket ", "object") == "wall socket"


def test_curated_merge_filter_and_number():
    """``unify: curated`` (the project's earlier tables): preferred names, a merge blacklist."""
    labels = [
        SourceLabel("ade", "object", 1, ("cloth", "fabric"), frequency=3, coverage=0.2),
        SourceLabel("os", "material", 5, ("Fabric",), frequency=36, coverage=4.0),
        SourceLabel("ade", "object", 2, ("door",), frequency=20, coverage=2.0),
        SourceLabel("ade", "part", 2, ("door",), frequency=15, coverage=0.5),
        SourceLabel("ade", "object", 3, ("car", "auto", "machine"), frequency=50, coverage=9.0),
        SourceLabel("ade", "object", 4, ("machine",), frequency=12, coverage=1.0),
        SourceLabel("ade", "object", 5, ("rare thing",), frequency=9, coverage=3.0),
        SourceLabel("ade", "object", 6, ("small thing",), frequency=40, coverage=0.4),
        SourceLabel("pascal", "object", 7, ("aeroplane",), frequency=11, coverage=1.0),
    ]
    v = unify(labels, min_frequency=10, min_coverage=0.5, rule="curated")
    by = {g.name: g for g in v.labels}
    # the most frequent source label (material 'fabric') names the merged label; 'cloth' becomes a synonym
    assert by["fabric"].category_counts() == {"material": 36, "object": 3} and by["fabric"].syns == ["cloth"]
    assert by["fabric"].primary_category() == "material"
    assert by["door"].category_counts() == {"object": 20, "part": 15}
    # 'machine' is blacklisted as a synonym: the car does not swallow the machine
    assert "machine" in by and by["machine"].frequency == 12 and "machine" not in by["car"].syns
    assert "airplane" in by and "aeroplane" in by["airplane"].syns
    # filtered: too few images, too little coverage
    assert {g.name for g in v.dropped} == {"rare thing", "small thing"}
    assert v.mapping[("ade", "object", 5)] == 0
    # numbered by frequency then coverage: car 50, fabric 39, door 35, machine 12, airplane 11
    assert [g.name for g in v.labels] == ["car", "fabric", "door", "machine", "airplane"]
    assert [g.number for g in v.labels] == [1, 2, 3, 4, 5]
    assert v.mapping[("ade", "part", 2)] == 3 and v.mapping[("os", "material", 5)] == 2
    assert v.category_counts() == {"object": 5, "material": 1, "part": 1}


def test_reserved_numbers_are_kept():
    labels = [SourceLabel("new", "object", 1, ("door",), 5, 1.0), SourceLabel("new", "object", 2, ("kite",), 20, 2.0)]
    v = unify(labels, min_frequency=10, min_coverage=0.5, reserved={"door": 7, "wall": 3})
    assert v.mapping[("new", "object", 1)] == 7 and v.mapping[("new", "object", 2)] == 8


def test_recipe_validation(tmp_path):
    r = recipe_from_dict({"size": 32, "sources": [{"type": "synthetic", "count": 3}]})
    assert r.segmentation_size == 16 and r.train_fraction == 0.7
    with pytest.raises(RecipeError, match="unknown key"):
        recipe_from_dict({"sizes": 3})
    with pytest.raises(RecipeError, match="size: Input should be a valid integer"):
        recipe_from_dict({"size": "big"})
    with pytest.raises(RecipeError, match="sum to 1"):
        recipe_from_dict({"splits": {"train": 0.5, "val": 0.4}})
    with pytest.raises(RecipeError, match=r"sources\[0\]"):
        recipe_from_dict({"sources": [{"path": "x"}]})
    p = tmp_path / "r.yaml"
    p.write_text("size: [1\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(p)


def test_shipped_synthetic_recipe_loads():
    from pathlib import Path
    r = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "synthetic.yaml")
    assert (r.size, r.segmentation_size, r.sources[0]["count"]) == (224, 112, 1000)
