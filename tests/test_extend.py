"""``broden add``: extend a finished store without renumbering labels or touching old rows."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from broden_builder import extend
from broden_builder.cli import main as broden
from broden_builder.extend import ExtendError, add_source
from broden_builder.sources import SourceDataError, SourceMissingError
from broden_builder.store.reader import BrodenStore
from broden_builder.store.validate import validate_store
from broden_builder.unify import SourceLabel, unify

from original_reader import OriginalStyleReader
from dummy_images import H, W
from test_coco import make_coco
from test_folder import make_folder


def snapshot(root: Path) -> dict:
    """sha256 of every file of a store (the staging folder excluded)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def store(synthetic_store, tmp_path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(synthetic_store, out)
    return out


def write_entry(path: Path, entry: dict) -> str:
    path.write_text(yaml.safe_dump(entry))
    return str(path)


def test_add_coco_keeps_numbers_rows_and_files(store, tmp_path, capsys):
    before = snapshot(store)
    old = BrodenStore(store)
    old_index = (store / "index.csv").read_bytes()
    f, oracle = make_coco(tmp_path / "coco", n_images=4)
    # one COCO class shares a name (and category) with an existing label: it must join it
    data = json.loads(f.read_text())
    data["categories"][3]["name"] = "car"   # the 'kite' polygon becomes a 'car'
    for c in data["categories"]:  # the synthetic world has persons too: keep 'person' a new label here
        c["name"] = "horse" if c["name"] == "person" else c["name"]
    f.write_text(json.dumps(data))
    src = write_entry(tmp_path / "coco.yaml", {"type": "coco", "annotations": str(f), "images": str(tmp_path / "coco" / "imgs")})
    assert broden(["add", str(store), "--source", src, "-q"]) == 0
    out = capsys.readouterr().out
    assert "4 images added" in out and "3 new label(s)" in out
    assert broden(["validate", str(store), "-q"]) == 0
    new = BrodenStore(store)
    # old files untouched, old index lines byte-identical and first, new rows appended
    after = snapshot(store)
    for rel, digest in before.items():
        if rel.startswith("images/"):
            assert after[rel] == digest, rel
    idx = (store / "index.csv").read_bytes()
    assert idx.startswith(old_index)
    assert [r.image for r in new.rows[: len(old)]] == [r.image for r in old.rows]
    assert sorted(r.image for r in new.rows[len(old):]) == [f"coco/img{i}.jpg" for i in range(4)]
    # labels: old numbers and names kept, new ones after the largest, stats from the planes
    top = max(l.number for l in old.labels)
    for lab in old.labels:
        assert new.label_by_number[lab.number].name == lab.name
    added = {l.name: l for l in new.labels if l.number > top}
    assert set(added) == {"dog", "cat", "horse"}
    assert sorted(l.number for l in added.values()) == list(range(top + 1, top + 4))
    assert all(l.frequency == 4 and l.categories == {"object": 4} for l in added.values())
    sq_old, sq_new = old.label("car"), new.label("car")
    assert sq_new.number == sq_old.number and sq_new.categories["object"] == sq_old.categories["object"] + 4
    # category codes of existing labels are kept; new labels take the next codes
    old_codes = {e.number: e.code for e in old.category_maps["object"]}
    new_codes = {e.number: e.code for e in new.category_maps["object"]}
    assert all(new_codes[n] == c for n, c in old_codes.items())
    assert sorted(new_codes[l.number] for l in added.values()) == list(range(len(old_codes) + 1, len(old_codes) + 4))
    # the new rows' pixels: cat painted over dog, resized with nearest neighbour (checked at the centre)
    row = next(r for r in new.rows if r.image == "coco/img0.jpg")
    obj = new.pixel_layers(row.index, "object")[0]
    sy, sx = H / obj.shape[0], W / obj.shape[1]
    for (y, x) in [(15, 25), (30, 10)]:  # native (row, col): inside cat; inside dog only
        want = "cat" if oracle["cat"][y, x] else "dog"
        assert new.label_by_number[int(obj[int(y / sy), int(x / sx)])].name == want
    assert "color" in new.segmentation(row.index) and new.pixel_layers(row.index, "color")
    info = json.loads((store / "build.json").read_text())
    assert info["additions"][-1]["images"] == 4 and info["additions"][-1]["source"]["type"] == "coco"
    assert "Extended on" in (store / "README.txt").read_text()
    assert not (store / extend.WORK).exists()


def test_add_folder_new_category_collision_reported(store, tmp_path):
    old_lines = (store / "index.csv").read_bytes().split(b"\r\n")
    old_square = BrodenStore(store).label("car")
    make_folder(tmp_path / "fold", names="value,name\n1,star\n2,car\n")
    entry = {"type": "folder", "images": str(tmp_path / "fold" / "images"), "masks": str(tmp_path / "fold" / "masks"),
             "labels": str(tmp_path / "fold" / "labels.csv"), "category": "shape"}
    rep = add_source(store, entry, origin="fold.yaml", quiet=True)
    assert rep.new_categories == ["shape"] and [n for _, n, _ in rep.new_labels] == ["star"]
    assert len(rep.collisions) == 1 and "'car'" in rep.collisions[0] and "fold.yaml" in rep.collisions[0]
    assert [p for p in validate_store(store) if p.severity == "error"] == []
    new_lines = (store / "index.csv").read_bytes().split(b"\r\n")
    assert new_lines[0] == old_lines[0] + b",shape"
    for a, b in zip(old_lines[1:-1], new_lines[1:len(old_lines) - 1]):
        assert b == a + b","          # the old bytes, plus one empty cell for the new column
    st = BrodenStore(store)
    sq = st.label("car")
    assert sq.number == old_square.number and sq.categories == {"object": old_square.categories["object"], "shape": 6}
    # a reader keyed by the header (the original tools' csv.DictReader) still reads every row
    orig = OriginalStyleReader(str(store))
    assert len(orig.image) == len(st) and orig.image[0]["shape"] == []
    seg = orig.segmentation(len(st) - 1)
    assert set(np.unique(seg["shape"])) == {0, st.label("star").number, sq.number}


def test_collision_error_and_refusals_leave_store_intact(store, tmp_path):
    make_folder(tmp_path / "fold", names="value,name\n1,star\n2,car\n")
    entry = {"type": "folder", "images": str(tmp_path / "fold" / "images"), "masks": str(tmp_path / "fold" / "masks"),
             "labels": str(tmp_path / "fold" / "labels.csv"), "category": "shape"}
    before = snapshot(store)
    with pytest.raises(ExtendError, match=r"fold\.yaml: shape label 'car' \(source code 2\).*existing label \d+ \('car', object\).*refusing"):
        add_source(store, {**entry, "on_collision": "error"}, origin="fold.yaml", quiet=True)
    assert snapshot(store) == before
    # renaming the clashing concept avoids the merge
    rep = add_source(store, {**entry, "rename": {"car": "!block"}}, origin="fold.yaml", quiet=True)
    assert sorted(n for _, n, _ in rep.new_labels) == ["block", "star"] and not rep.collisions
    after_first = snapshot(store)
    # the same images again: refused, nothing changes
    with pytest.raises(ExtendError, match=r"already in"):
        add_source(store, entry, origin="fold.yaml", quiet=True)
    # a mask value with no name, under another prefix
    make_folder(tmp_path / "bad", bad_value=9)
    bad = {**entry, "prefix": "bad", "images": str(tmp_path / "bad" / "images"), "masks": str(tmp_path / "bad" / "masks"),
           "labels": str(tmp_path / "bad" / "labels.csv")}
    with pytest.raises(SourceDataError, match=r"f5\.png: mask value 9 has no name in .*labels\.csv"):
        add_source(store, bad, origin="bad.yaml", quiet=True)
    # a category whose kind differs (image-level labels into the pixel category 'object')
    (tmp_path / "il.csv").write_text("image,label\nf0.png,thing\n")
    with pytest.raises(ExtendError, match=r"category 'object' is pixel"):
        add_source(store, {"type": "folder", "prefix": "il", "images": str(tmp_path / "fold" / "images"),
                           "labels": str(tmp_path / "il.csv"), "category": "object"}, origin="il.yaml", quiet=True)
    # an unreachable hub id, through the CLI
    pytest.importorskip("datasets")
    import datasets

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    try:
        y = write_entry(tmp_path / "hub.yaml", {"type": "hf", "dataset": "nobody/nothing", "mask_column": "m"})
        assert broden(["add", str(store), "--source", y, "-q"]) == 1
    finally:
        mp.undo()
    assert snapshot(store) == after_first
    assert not (store / extend.WORK).exists()


def test_interrupted_commit_is_completed(store, tmp_path, monkeypatch):
    make_folder(tmp_path / "fold")
    entry = {"type": "folder", "images": str(tmp_path / "fold" / "images"), "masks": str(tmp_path / "fold" / "masks"),
             "labels": str(tmp_path / "fold" / "labels.csv"), "category": "shape"}
    before = snapshot(store)
    real = extend.recover
    monkeypatch.setattr(extend, "recover", lambda root: False)   # 'crash' right after the COMMIT marker
    add_source(store, entry, quiet=True)
    now = {k: v for k, v in snapshot(store).items() if not k.startswith(extend.WORK)}
    assert now == before                                         # nothing visible changed yet
    assert real(store) is True                                   # the next run completes it
    assert validate_store(store) == [] and len(BrodenStore(store)) == 60 + 6


def test_unify_reserved_never_renumbers():
    old = [SourceLabel("store", "object", 5, ("car", "auto"), 10, 1.0), SourceLabel("store", "object", 2, ("stand",), 3, 0.3),
           SourceLabel("store", "scene", 9, ("street-s",), 4, 4.0)]
    new = [SourceLabel("n", "object", 1, ("automobile", "car"), 1000, 90.0),   # more frequent, names 'car' second
           SourceLabel("n", "object", 2, ("auto",), 50, 2.0),                 # an existing synonym
           SourceLabel("n", "object", 3, ("kiosk", "stand"), 40, 2.0),        # 'stand' blacklisted as a synonym
           SourceLabel("n", "scene", 4, ("street",), 30, 30.0)]
    v = unify(old + new, 10, 0.5, rule="curated", reserved={"car": 5, "stand": 2, "street-s": 9})
    assert v.mapping[("n", "object", 1)] == 5 and v.mapping[("n", "object", 2)] == 5
    assert v.mapping[("n", "scene", 4)] == 9
    assert v.mapping[("n", "object", 3)] == 10                   # a new label after the largest reserved number
    names = {g.number: g.name for g in v.labels}
    assert names == {2: "stand", 5: "car", 9: "street-s", 10: "kiosk"}
    # the original rule: a label holding a name of its own ('automobile', 'kiosk') is its own label;
    # 'auto' is held by the existing label 5 (its synonym) and joins it; numbers never change
    v = unify(old + new, 10, 0.5, reserved={"car": 5, "stand": 2, "street-s": 9})
    assert {k: v.mapping[("n",) + k] for k in (("object", 1), ("object", 2), ("object", 3), ("scene", 4))} == \
        {("object", 1): 10, ("object", 2): 5, ("object", 3): 11, ("scene", 4): 9}
    assert {g.number: g.name for g in v.labels} == {2: "stand", 5: "car", 9: "street-s", 10: "automobile", 11: "kiosk"}


def test_dissect_score_reports_added_concepts(store, tmp_path):
    dissect_cli = pytest.importorskip("dissect.cli")
    make_folder(tmp_path / "fold")
    entry = {"type": "folder", "images": str(tmp_path / "fold" / "images"), "masks": str(tmp_path / "fold" / "masks"),
             "labels": str(tmp_path / "fold" / "labels.csv"), "category": "shape"}
    add_source(store, entry, quiet=True)
    st = BrodenStore(store)
    star = st.label("star").number
    rng = np.random.default_rng(0)
    acts = rng.uniform(0, 0.1, (len(st), 2, 32, 32)).astype(np.float32)
    for r in st.rows:
        if r.cells["shape"]:
            acts[r.index, 0] += 5.0 * (st.pixel_layers(r.index, "shape")[0] == star)   # unit 1 fires on 'star'
    np.save(tmp_path / "acts.npy", acts)
    rc = dissect_cli.main(["score", "--store", str(store), "--activations", str(tmp_path / "acts.npy"), "--out",
                           str(tmp_path / "res"), "--device", "cpu", "--upsample", "nearest", "--quiet"])
    assert rc == 0
    rows = (tmp_path / "res" / "acts" / "tally.csv").read_text().splitlines()
    header = rows[0].split(",")
    unit1 = next(dict(zip(header, r.split(","))) for r in rows[1:] if r.split(",")[0] == "1")
    assert unit1["label"] == "star" and unit1["category"] == "shape" and float(unit1["score"]) > 0.3
