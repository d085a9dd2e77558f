"""The ``dtd`` source offline: DTD's label file and images generated in the real layout (dummy data).

Oracles: the labels written into the generated file, and the messages the source promises.
The end-to-end download of DTD (with Pascal) over a local HTTP server is in test_pascal.py.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from broden_builder.sources import BadSourceItem, SourceMissingError, get_source_class
from broden_builder.sources.dtd.source import DtdSource


def jpeg_bytes(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 255, 3)
    rgb = np.stack([(base[c] + (x * (c + 1) + y * (3 - c)) * 2) % 256 for c in range(3)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _bad(src, rec, match):
    with pytest.raises(BadSourceItem, match=match):
        src.resolve(rec)


DTD_LINES = [
    ("banded/banded_0001.jpg", ["banded"]),
    ("banded/banded_0002.jpg", ["banded", "striped"]),
    ("dotted/dotted_0001.jpg", ["dotted"]),
    ("dotted/dotted_0007.jpg", ["banded", "dotted", "striped"]),
    ("striped/striped_0003.jpg", ["striped"]),
    ("striped/striped_0004.jpg", ["dotted", "striped"]),
]


def make_dtd(root: Path, lines=DTD_LINES, seed=0) -> Path:
    base = root / "dtd"
    for k, (rel, _) in enumerate(lines):
        p = base / "images" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpeg_bytes(24, 32, seed + 100 + k))
    (base / "labels").mkdir(parents=True, exist_ok=True)
    # the real file: 'path lab1 lab2 ' with a trailing space, labels in alphabetical order
    (base / "labels" / "labels_joint_anno.txt").write_text("".join(f"{rel} {' '.join(labs)} \n" for rel, labs in lines))
    return base


def test_generated_dtd(tmp_path):
    make_dtd(tmp_path / "d")
    for path in (tmp_path / "d", tmp_path / "d" / "dtd"):  # the extraction folder, or dtd/ itself
        src = get_source_class("dtd")({"type": "dtd", "path": str(path)})
        src.check()
        vocab = src.vocabulary()["texture"]
        assert vocab == {1: ("banded",), 2: ("dotted",), 3: ("striped",)}
        recs = src.records()
        assert [r.basename for r in recs] == ["banded_0001", "banded_0002", "dotted_0001", "dotted_0007",
                                              "striped_0003", "striped_0004"]
        for rec, (rel, labs) in zip(recs, DTD_LINES):
            res = src.resolve(rec)
            assert sorted(vocab[c][0] for c in res.image_level["texture"]) == sorted(labs)
            assert res.pixel == {} and res.image.shape == (24, 32, 3)
        assert src.image_level_categories() == frozenset({"texture"})


def test_bad_dtd_input(tmp_path):
    base = make_dtd(tmp_path / "d")
    (base / "images" / "dotted" / "dotted_0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (base / "images" / "striped" / "striped_0003.jpg").unlink()
    src = DtdSource({"type": "dtd", "path": str(tmp_path / "d")})
    recs = {r.basename: r for r in src.records()}
    _bad(src, recs["dotted_0001"], r"dotted_0001\.jpg: cannot read image")
    _bad(src, recs["striped_0003"], r"striped_0003\.jpg: image is missing")
    lab = base / "labels" / "labels_joint_anno.txt"
    lab.write_text(lab.read_text() + "banded/banded_0009.jpg\n")
    with pytest.raises(SourceMissingError, match=r"labels_joint_anno\.txt:7: image 'banded/banded_0009\.jpg' has no label"):
        DtdSource({"type": "dtd", "path": str(tmp_path / "d")}).check()
    with pytest.raises(SourceMissingError, match="no DTD label file"):
        DtdSource({"type": "dtd", "path": str(tmp_path / "nowhere")}).check()


def test_plan_counts_dtd_from_its_labels_file(tmp_path):
    """`broden build --plan` counts DTD from labels_joint_anno.txt (it said "no metadata counts").
    Hand count of DTD_LINES: banded 3 images, dotted 3, striped 4."""
    from broden_builder.plan import plan_recipe
    from broden_builder.recipe import recipe_from_dict

    make_dtd(tmp_path / "d")
    src = get_source_class("dtd")({"type": "dtd", "path": str(tmp_path / "d")})
    assert src.plan_statistics() == {("texture", 1): (3, 3.0), ("texture", 2): (3, 3.0), ("texture", 3): (4, 4.0)}
    for min_frequency, kept in ((3, ["banded", "dotted", "striped"]), (4, ["striped"])):
        recipe = recipe_from_dict({"min_frequency": min_frequency, "min_coverage": 0.0, "color": False,
                                   "sources": [{"type": "dtd", "path": str(tmp_path / "d")}]})
        plan = plan_recipe(recipe)
        assert plan.sources["dtd"]["status"] == "counted" and "dtd" not in plan.not_counted
        assert sorted(r["name"] for r in plan.vocabulary) == kept
        assert plan.categories == {"texture": len(kept)} and "texture" not in plan.upper_bound
