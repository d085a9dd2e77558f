"""No silent wrong result (issue 25, kind 4): explain refuses changed activations, ablate refuses
more classes than outputs, a truncated image is refused whatever Pillow's global setting says.

Oracles: the inputs changed here (the file rewritten, the class folder added, the bytes cut off).
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFile

from broden_builder.store.reader import BrodenStore
from dissect.cli import main
from test_ablate import COLORNET_SOURCE, _folder


@pytest.fixture
def scored(synthetic_store, tmp_path):
    n = len(BrodenStore(synthetic_store).rows)
    acts = tmp_path / "feats.npy"
    np.save(acts, np.random.default_rng(0).standard_normal((n, 3, 4, 4)).astype(np.float32))
    out = tmp_path / "out"
    args = ["explain", "--store", str(synthetic_store), "--activations", str(acts), "--out", str(out), "--quiet",
            "--no-report", "--workers", "0", "--length", "1"]
    assert main(args) == 0
    doc = json.loads((out / "feats" / "result.json").read_text())
    assert doc["model"]["fingerprint"] and doc["model"]["sample_fingerprint"]
    return acts, out, args


def _refused(capsys, rc, *fragments):
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "this is a bug" not in err
    for f in fragments:
        assert f in err, (f, err)


def test_explain_refuses_activations_changed_since_scoring(scored, capsys):
    acts, out, args = scored
    thr_before = (out / "feats" / "thresholds.npy").read_bytes()
    csv_before = (out / "feats" / "explanations.csv").read_bytes()
    a = np.load(acts)
    np.save(acts, a * 10.0)  # same shape and dtype, other content
    _refused(capsys, main(args), str(acts), "not the activations", "scored from")
    assert (out / "feats" / "thresholds.npy").read_bytes() == thr_before
    assert (out / "feats" / "explanations.csv").read_bytes() == csv_before


def test_explain_refuses_changed_content_even_with_the_old_mtime(scored, capsys):
    acts, out, args = scored
    st = os.stat(acts)
    a = np.load(acts)
    a[0] += 1.0  # row 0 is one of the sampled rows
    np.save(acts, a)
    os.utime(acts, ns=(st.st_atime_ns, st.st_mtime_ns))
    _refused(capsys, main(args), "not the activations")


def test_explain_accepts_the_same_activations_again(scored, capsys):
    _acts, _out, args = scored
    assert main(args) == 0


def test_ablate_refuses_more_class_folders_than_model_outputs(tmp_path, capsys):
    folder = _folder(tmp_path / "data")  # 3 classes for ColorNet's 3 outputs
    for extra in ("d_cyan", "e_pink"):
        (folder / extra).mkdir()
        Image.new("RGB", (8, 8), (0, 200, 200)).save(folder / extra / "0.png")
    (tmp_path / "colornet.py").write_text(COLORNET_SOURCE)
    rc = main(["ablate", "--model", f"{tmp_path / 'colornet.py'}:colornet", "--layer", "features", "--data",
               str(folder), "--out", str(tmp_path / "out"), "--input-size", "8", "--mean", "0,0,0", "--std", "1,1,1",
               "--quiet", "--units", "1"])
    _refused(capsys, rc, "5 classes", "3 outputs")
    assert not (tmp_path / "out" / "features" / "ablations.json").exists()


@pytest.fixture
def truncated_global():
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what any library in the process may set
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = before


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_jpeg_is_refused_by_every_reader(synthetic_store, tmp_path, truncated_global):
    from broden_builder.sources import BadSourceItem
    from broden_builder.sources.decode import load_image
    from broden_builder.store.errors import StoreFormatError
    from broden_builder.torch_dataset import BrodenDataset

    photo = tmp_path / "p.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo, quality=95)
    _truncate(photo)
    with pytest.raises(BadSourceItem, match="truncated"):
        load_image(photo)
    with Image.open(photo) as im:  # a lazily opened image handed over by a dataset library
        from broden_builder.sources.decode import decode_image

        with pytest.raises(BadSourceItem, match="truncated"):
            decode_image(im, "row 3")
    root = tmp_path / "s"
    shutil.copytree(synthetic_store, root)
    store = BrodenStore(root)
    _truncate(root / "images" / store.rows[0].image)
    with pytest.raises(StoreFormatError, match="truncated"):
        store.load_image(0)
    with pytest.raises(StoreFormatError, match="truncated"):
        BrodenDataset(store, with_labels=False).load_image(0)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


def test_build_never_stores_a_truncated_photo(tmp_path, truncated_global):
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict
    from test_folder import make_folder

    make_folder(tmp_path / "src")
    bad = tmp_path / "src" / "images" / "f2.jpg"
    Image.open(tmp_path / "src" / "images" / "f2.png").convert("RGB").save(bad, quality=95)
    (tmp_path / "src" / "images" / "f2.png").unlink()
    _truncate(bad)
    recipe = recipe_from_dict({"size": 32, "min_frequency": 1, "sources": [{
        "type": "folder", "images": str(tmp_path / "src" / "images"), "masks": str(tmp_path / "src" / "masks"),
        "labels": str(tmp_path / "src" / "labels.csv"), "category": "shape"}]})
    try:
        build_store(recipe, tmp_path / "store", quiet=True)
    except Exception as e:  # refused outright: fine, as long as it names the file
        assert "f2.jpg" in str(e) and "truncated" in str(e)
        return
    names = [r.image for r in BrodenStore(tmp_path / "store").rows]
    assert names and not any("f2" in n for n in names)
