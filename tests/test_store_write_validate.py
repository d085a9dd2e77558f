"""Writer round trip with hand-computed statistics, and validation of each corruption."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from broden_builder import BrodenStore
from broden_builder.store.format import encode_label_png
from broden_builder.store.validate import validate_store
from broden_builder.store.writer import LabelSpec, StoreWriter


def _write_small(root):
    w = StoreWriter(root)
    a = np.zeros((2, 4), np.int32)
    a[0, :2] = 1          # label 1: 2 of 8 pixels
    a[1, :] = 2           # label 2: 4 of 8
    b = np.zeros((2, 4), np.int32)
    b[:, 0] = 2           # label 2: 2 of 8 in image b
    b2 = np.zeros((2, 4), np.int32)
    b2[:, 0] = 2          # the same pixels again in a second layer: counted once
    b2[:, 3] = 3          # label 3 (a part): 2 of 8
    rgb = np.full((4, 8, 3), 127, np.uint8)
    w.write_row("s/a.jpg", "train", (4, 8), (2, 4), {"object": [a]}, {"scene": [4]}, rgb=rgb)
    w.write_row("s/b.jpg", "val", (4, 8), (2, 4), {"object": [b], "part": [b2]}, {"scene": [4, 0]}, rgb=rgb)
    labels = [LabelSpec(1, "dog"), LabelSpec(2, "wall", ("partition",)), LabelSpec(3, "door"), LabelSpec(4, "street-s")]
    w.finalize(labels, {"format": "broden"}, "readme\n")
    return a, b, b2


def test_round_trip_and_hand_computed_statistics(tmp_path):
    root = tmp_path / "store"
    a, b, b2 = _write_small(root)
    s = BrodenStore(root)
    assert sorted(r.image for r in s.rows) == ["s/a.jpg", "s/b.jpg"]
    ra = next(r for r in s.rows if r.image == "s/a.jpg")
    rb = next(r for r in s.rows if r.image == "s/b.jpg")
    assert (ra.ih, ra.iw, ra.sh, ra.sw, ra.split) == (4, 8, 2, 4, "train")
    assert (s.pixel_layers(ra.index, "object")[0] == a).all()
    assert [(l == x).all() for l, x in zip(s.pixel_layers(rb.index, "part"), [b2])] == [True]
    assert s.image_labels(rb.index, "scene") == [4]
    # label 2 (wall): object in both images: coverage 4/8 + 2/8 = 0.75; part in b: 2/8 = 0.25
    wall = s.label("wall")
    assert wall.categories == {"object": 2, "part": 1} and wall.frequency == 3
    assert wall.coverage == pytest.approx(1.0)
    assert s.label("partition").number == 2
    assert s.label("street-s").categories == {"scene": 2} and s.label(4).coverage == pytest.approx(2.0)
    cmap = {e.name: e for e in s.category_maps["object"]}
    assert cmap["wall"].code == 1 and cmap["dog"].code == 2 and cmap["wall"].coverage == pytest.approx(0.75)
    cats = {c.name: c for c in s.category_info.values()}
    assert (cats["object"].first, cats["object"].last, cats["object"].count, cats["object"].frequency) == (1, 2, 2, 3)
    # categories ordered by smallest global number: object(1), part(2), scene(4)
    assert s.categories == ["object", "part", "scene"]
    assert validate_store(root) == []
    assert not (root / ".staging").exists()


@pytest.fixture
def store_copy(synthetic_store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(synthetic_store, dst)
    return dst


def _errors(root):
    return [p for p in validate_store(root) if p.severity == "error"]


def _row_of(root, image):
    s = BrodenStore(root)
    return next(r for r in s.rows if r.image == image)


def test_synthetic_store_is_valid(store_copy):
    assert _errors(store_copy) == []


def test_missing_png_is_reported_with_row(store_copy):
    s = BrodenStore(store_copy)
    row = s.rows[5]
    png = row.cells["object"][0]
    (store_copy / "images" / png).unlink()
    errs = _errors(store_copy)
    assert any(e.file == "index.csv" and e.row == 6 and "missing" in e.message and png in e.message for e in errs)


def test_png_of_wrong_size(store_copy):
    s = BrodenStore(store_copy)
    png = s.rows[2].cells["color"][0]
    Image.fromarray(encode_label_png(np.zeros((5, 5), np.int32))).save(store_copy / "images" / png)
    assert any(e.row == 3 and "5x5" in e.message for e in _errors(store_copy))


def test_image_of_wrong_size(store_copy):
    s = BrodenStore(store_copy)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(store_copy / "images" / s.rows[0].image)
    assert any(e.row == 1 and "12x10" in e.message for e in _errors(store_copy))


def test_truncated_png(store_copy):
    s = BrodenStore(store_copy)
    p = store_copy / "images" / s.rows[3].cells["material"][0]
    p.write_bytes(p.read_bytes()[:40])
    assert any(e.row == 4 and "cannot be read" in e.message for e in _errors(store_copy))


def test_unknown_label_number_and_wrong_category(store_copy):
    s = BrodenStore(store_copy)
    png = store_copy / "images" / s.rows[1].cells["object"][0]
    arr = np.asarray(Image.open(png)).copy()
    arr[0, 0] = (200, 3, 0)  # 200 + 768 = 968: not a label
    Image.fromarray(arr).save(png)
    color_label = s.category_maps["color"][0].number
    png2 = store_copy / "images" / s.rows[1].cells["material"][0]
    arr2 = np.asarray(Image.open(png2)).copy()
    arr2[0, 0] = (color_label % 256, color_label // 256, 0)
    Image.fromarray(arr2).save(png2)
    errs = _errors(store_copy)
    assert any(e.row == 2 and "968" in e.message and "not in label.csv" in e.message for e in errs)
    assert any(e.row == 2 and f"label {color_label}" in e.message and "not in category 'material'" in e.message for e in errs)


def test_statistics_disagreeing(store_copy):
    lines = (store_copy / "label.csv").read_text().splitlines()
    parts = lines[3].split(",")
    parts[3] = str(int(parts[3]) + 5)
    lines[3] = ",".join(parts)
    (store_copy / "label.csv").write_text("\n".join(lines) + "\n")
    assert any(e.file == "label.csv" and e.row == 3 and "frequency" in e.message for e in _errors(store_copy))


def test_duplicate_rows_bad_split_and_header(store_copy):
    lines = (store_copy / "index.csv").read_text().splitlines()
    lines.append(lines[1])
    lines[2] = lines[2].replace(",train,", ",test,").replace(",val,", ",test,")
    (store_copy / "index.csv").write_text("\n".join(lines) + "\n")
    errs = _errors(store_copy)
    assert any(e.row == len(lines) - 1 and "duplicate image" in e.message for e in errs)
    assert any(e.row == 2 and "split 'test'" in e.message for e in errs)
    (store_copy / "category.csv").write_text("name,first,count\nobject,1,2\n")
    assert any(e.file == "category.csv" and "malformed header" in e.message for e in _errors(store_copy))


def test_missing_table_file(store_copy):
    (store_copy / "c_part.csv").unlink()
    assert any(e.file == "c_part.csv" and "missing" in e.message for e in _errors(store_copy))


def test_cli_validate_exit_codes_and_stats(store_copy):
    cmd = [sys.executable, "-m", "broden_builder.cli"]
    ok = subprocess.run(cmd + ["validate", str(store_copy), "-q"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stats = subprocess.run(cmd + ["stats", str(store_copy)], capture_output=True, text=True)
    assert stats.returncode == 0 and "60 images" in stats.stdout and "scene" in stats.stdout
    (store_copy / "images" / BrodenStore(store_copy).rows[0].image).unlink()
    bad = subprocess.run(cmd + ["validate", str(store_copy), "-q"], capture_output=True, text=True)
    assert bad.returncode == 1 and "index.csv:1" in bad.stdout


def test_label_without_category(store_copy):
    lines = (store_copy / "label.csv").read_text().splitlines()
    parts = lines[2].split(",")
    parts[2] = ""
    lines[2] = ",".join(parts)
    (store_copy / "label.csv").write_text("\n".join(lines) + "\n")
    assert any(e.file == "label.csv" and e.row == 2 and "no 'cat(count)' category" in e.message for e in _errors(store_copy))
