"""Labels a segmentation model predicted are told apart from annotated ones everywhere a user reads
results: result.json units, tally.csv, the layer and index pages, compare, explain, the notebook helpers.

The store is the synthetic one with build.json's ``predicted_labels`` naming half of its object labels
(as the segmenter source records them); planted units fire on one object each, so the expected
marking of every unit is known from the plant: unit u is marked iff its object is in the chosen half.
"""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from broden_builder import BrodenStore
from dissect.cli import main

MODEL = "models/oracle.py:make"


@pytest.fixture(scope="module")
def world(synthetic_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predicted")
    store_path = tmp / "store"
    shutil.copytree(synthetic_store, store_path)
    store = BrodenStore(store_path)
    objects = sorted({l.name for l in store.labels if store.primary_category(l.number) == "object"})
    chosen = set(objects[::2])
    info = json.loads((store_path / "build.json").read_text())
    info["predicted_labels"] = {n: {"number": 0,
                                    "category": "object", "predicted_by": ["segmenter"],
                                    "models": [{"model": MODEL, "masks": "predicted by a segmentation model, "
                                                                          "not annotated"}]} for n in chosen}
    (store_path / "build.json").write_text(json.dumps(info))
    store = BrodenStore(store_path)
    maps = []
    for i in range(len(store)):
        planes = store.pixel_layers(i, "object")
        m = np.stack([sum(((p == store.label(o).number) for p in planes), np.zeros(planes[0].shape, bool))
                      .astype(np.float32) if planes else np.zeros((store.rows[i].sh, store.rows[i].sw), np.float32)
                      for o in objects])
        maps.append(m + 0.01 * np.random.default_rng(i).random(m.shape, dtype=np.float32))
    np.save(tmp / "planted.npy", np.stack(maps))
    out = tmp / "out"
    assert main(["-q", "score", "--store", str(store_path), "--activations", str(tmp / "planted.npy"),
                 "--out", str(out)]) == 0
    return {"tmp": tmp, "store": store_path, "out": out, "objects": objects, "chosen": chosen}


def _expected(world) -> dict:
    """{unit (1-based): marked?} from the plant: unit u detects objects[u-1]."""
    return {u + 1: o in world["chosen"] for u, o in enumerate(world["objects"])}


def test_result_json_and_tally_csv_mark_predicted_labels(world):
    doc = json.loads((world["out"] / "planted" / "result.json").read_text())
    units = {int(u["unit"]): u for u in doc["units"]}
    for u, marked in _expected(world).items():
        assert units[u]["label"] == world["objects"][u - 1]  # the plant worked
        assert units[u].get("predicted_by") == (MODEL if marked else None)
    with open(world["out"] / "planted" / "tally.csv", newline="") as f:
        rows = {int(r["unit"]): r for r in csv.DictReader(f)}
    for u, marked in _expected(world).items():
        assert rows[u]["label-predicted-by"] == (MODEL if marked else "")


def test_layer_and_index_pages_mark_predicted_labels(world):
    page = (world["out"] / "planted" / "report.html").read_text("utf-8")
    n = sum(_expected(world).values())
    assert page.count(f"label predicted by {MODEL} (segmentation model), not annotated") == n
    assert f"{n} units carry labels predicted by {MODEL}" in page
    index = (world["out"] / "index.html").read_text("utf-8")
    assert f"({n} predicted)" in index and f"Labels predicted by {MODEL} (segmentation model), not annotated" in index


def test_compare_marks_predicted_detectors(world, capsys):
    capsys.readouterr()
    dest = world["tmp"] / "cmp"
    assert main(["-q", "compare", str(world["out"]), "--out", str(dest)]) == 0
    text = capsys.readouterr().out
    doc = json.loads((world["out"] / "planted" / "result.json").read_text())
    detectors = sum(1 for u in doc["units"] if u["detector"])
    marked = sum(1 for u in doc["units"] if u["detector"] and world["objects"][int(u["unit"]) - 1] in world["chosen"])
    assert marked > 0
    assert f"planted: {marked} of {detectors} detectors carry labels predicted by {MODEL}" in text
    with open(dest / "compare.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] == "all"]
    assert rows[0]["predicted_detectors"] == f"{MODEL}: {marked}"
    assert f"{marked} of {detectors} detectors carry labels predicted by {MODEL}" in (dest / "compare.html").read_text()


def test_explain_marks_predicted_labels_of_formulas(world):
    out = world["tmp"] / "explain"
    assert main(["-q", "explain", "--store", str(world["store"]), "--activations", str(world["tmp"] / "planted.npy"),
                 "--out", str(out), "--length", "1", "--categories", "object"]) == 0
    with open(out / "planted" / "explanations.csv", newline="") as f:
        rows = {int(r["unit"]): r for r in csv.DictReader(f)}
    for u, marked in _expected(world).items():
        label = rows[u]["formula"]
        assert label == world["objects"][u - 1]
        assert rows[u]["predicted_by"] == (f"{label}: {MODEL}" if marked else "")


def test_notebook_helpers_mark_predicted_labels(world):
    from dissect.results import load_result
    from dissect.tools import layer_html, show_unit

    res = load_result(world["out"] / "planted")
    html = layer_html(res, top=len(res.units))
    n = sum(1 for u in res.detectors() if world["objects"][int(u["unit"]) - 1] in world["chosen"])
    assert html.count(f"predicted by {MODEL} (segmentation model), not annotated") == n
    for u, marked in list(_expected(world).items())[:4]:
        title = show_unit(res, u, world["store"], k=1)._suptitle.get_text()
        assert ("predicted by " + MODEL in title) == marked


def test_annotated_store_has_no_marking(synthetic_store, tmp_path):
    """An annotated store's results keep the original columns (no predicted column, no marks)."""
    acts = np.random.default_rng(0).random((len(BrodenStore(synthetic_store)), 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", acts)
    assert main(["-q", "score", "--store", str(synthetic_store), "--activations", str(tmp_path / "a.npy"),
                 "--out", str(tmp_path / "o"), "--no-report"]) == 0
    header = (tmp_path / "o" / "a" / "tally.csv").read_text().splitlines()[0]
    assert "predicted" not in header
    assert all("predicted_by" not in u for u in json.loads((tmp_path / "o" / "a" / "result.json").read_text())["units"])


def test_describe_marks_predicted_iou_labels(world, tmp_path):
    """descriptions.csv names the model of each unit's IoU label that a segmentation model predicted."""
    from test_describe import _oracle_setup

    _oracle_setup(world["store"], tmp_path)
    out = tmp_path / "out"
    shutil.copytree(world["out"], out)
    assert main(["-q", "describe", "--store", str(world["store"]), "--activations", str(tmp_path / "planted.npy"),
                 "--clip", f"{tmp_path / 'oracle.py'}:make", "--vocabulary", str(tmp_path / "words.txt"),
                 "--out", str(out), "--device", "cpu"]) == 0
    with open(out / "planted" / "descriptions.csv", newline="") as f:
        rows = {int(r["unit"]): r for r in csv.DictReader(f)}
    for u, marked in _expected(world).items():
        assert rows[u]["iou_label"] == world["objects"][u - 1]
        assert rows[u]["iou_label_predicted_by"] == (MODEL if marked else "")
