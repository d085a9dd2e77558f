"""Rotation basis (Bau et al. 2017, sec. 3.2) and the comparison page of several runs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dissect.engine._basis import BasisError, apply_basis, load_basis, random_orthogonal, resolve_basis
from dissect.tools._compare import CompareInputError, collect, run_name, write_compare


def test_random_orthogonal_is_orthogonal_seeded_and_sign_fixed():
    q = random_orthogonal(16, 3)
    assert np.abs(q @ q.T - np.eye(16)).max() < 1e-12
    assert np.array_equal(q, random_orthogonal(16, 3)) and not np.array_equal(q, random_orthogonal(16, 4))
    # sign fix: Q = G R^-1 with R's diagonal positive, i.e. Q^T G is upper triangular with a positive diagonal
    g = np.random.default_rng(3).standard_normal((16, 16))
    r = q.T @ g
    assert np.abs(np.tril(r, -1)).max() < 1e-10 and (np.diag(r) > 0).all()


def test_apply_basis_mixes_units_and_identity_changes_nothing():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((2, 4, 3, 3)).astype(np.float32))
    assert torch.equal(apply_basis(a, torch.eye(4, dtype=torch.float64)), a)
    m = torch.from_numpy(random_orthogonal(4, 1))
    out = apply_basis(a, m)
    plain = np.einsum("ij,bjyx->biyx", m.numpy(), a.numpy().astype(np.float64))
    assert np.allclose(out.numpy(), plain, atol=1e-5)


def test_load_basis_errors(tmp_path):
    np.save(tmp_path / "ok.npy", np.eye(3))
    assert load_basis(tmp_path / "ok.npy", 3).shape == (3, 3)
    with pytest.raises(BasisError, match="must be 4 x 4"):
        load_basis(tmp_path / "ok.npy", 4)
    np.save(tmp_path / "nan.npy", np.full((3, 3), np.nan))
    with pytest.raises(BasisError, match="NaN"):
        load_basis(tmp_path / "nan.npy", 3)
    with pytest.raises(BasisError, match="does not exist"):
        load_basis(tmp_path / "none.npy", 3)
    with pytest.raises(BasisError, match="not both"):
        resolve_basis(3, rotate=1, basis=tmp_path / "ok.npy")
    m, rec = resolve_basis(3, rotate=7)
    assert rec["kind"] == "rotate" and rec["seed"] == 7 and rec["orthogonality_error"] < 1e-12


def _result(d, layer, model, per, uniq, basis=None):
    d.mkdir(parents=True)
    doc = {"layer": layer, "model": model, "settings": {"iou_threshold": 0.04, **({"basis": basis} if basis else {})},
           "units": [], "summary": {"units": 8, "detectors": sum(per.values()), "per_category": per,
                                    "unique_detectors": uniq}}
    (d / "result.json").write_text(json.dumps(doc))


def test_compare_writes_csv_and_page_with_run_names(tmp_path):
    m = {"kind": "torchvision", "name": "resnet18", "spec": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1"}
    _result(tmp_path / "a" / "layer3", "layer3", m, {"object": 2, "color": 1}, {"object": 1, "color": 1})
    _result(tmp_path / "a" / "layer4", "layer4", m, {"object": 5, "color": 0}, {"object": 3, "color": 0})
    _result(tmp_path / "b" / "layer4", "layer4", m, {"object": 1, "color": 0}, {"object": 1, "color": 0},
            basis={"kind": "rotate", "seed": 0})
    _result(tmp_path / "c" / "feats", "feats", {"kind": "activations", "file": "/x/feats.npy"}, {"texture": 2}, {"texture": 2})
    page = write_compare([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "cmp")
    assert page.is_file() and (tmp_path / "cmp" / "unique_detectors.svg").is_file()
    with open(tmp_path / "cmp" / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["run"], r["layer"], r["category"]): (int(r["detectors"]), int(r["unique_detectors"])) for r in rows}
    assert got[("resnet18 (IMAGENET1K_V1)", "layer4", "object")] == (5, 3)
    assert got[("resnet18 (IMAGENET1K_V1)", "layer3", "all")] == (3, 2)
    assert got[("resnet18 (IMAGENET1K_V1) rotated (seed 0)", "layer4", "object")] == (1, 1)
    assert got[("feats", "feats", "texture")] == (2, 2) and got[("feats", "feats", "object")] == (0, 0)
    html = page.read_text()
    assert "rotated (seed 0)" in html and "compare.csv" in html
    # the same run twice gets the folder name
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    names = {s.run for s in collect([tmp_path / "a", tmp_path / "a2"])}
    assert names == {"resnet18 (IMAGENET1K_V1) [a]", "resnet18 (IMAGENET1K_V1) [a2]"}


def test_compare_bad_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareInputError, match="no <layer>/result.json"):
        write_compare([tmp_path / "empty"], tmp_path / "cmp")
    with pytest.raises(CompareInputError, match="does not exist"):
        write_compare([tmp_path / "nope"], tmp_path / "cmp")
    assert run_name({"model": {"spec": "m", "weights": "none (random init, seed 0)"}}) == "m (random init)"


def test_compare_cli(tmp_path, capsys):
    from dissect.cli import main

    m = {"kind": "torchvision", "name": "vgg16", "spec": "vgg16", "weights": "none (random init, seed 0)"}
    _result(tmp_path / "r" / "conv5", "conv5", m, {"object": 1}, {"object": 1})
    assert main(["compare", str(tmp_path / "r"), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "compare.html").is_file()
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) in (1, 2)
    assert "does not exist" in capsys.readouterr().err
