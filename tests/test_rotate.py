"""--rotate / --basis (Bau et al., CVPR 2017, section 3.2): planted exact detectors are lost
under a random rotation; the identity basis changes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from broden_builder.store.reader import BrodenStore
from conftest import build_synthetic
from dissect.cli import main


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A store and activations of 24 units: units 1-6 are exactly the masks of 6 pixel labels, the
    other 18 Gaussian noise (a distributed code the rotation mixes the detectors into)."""
    root = tmp_path_factory.mktemp("rotate")
    build_synthetic(root / "store", count=30, seed=5)
    store = BrodenStore(root / "store")
    N = len(store.rows)
    sh, sw = store.rows[0].sh, store.rows[0].sw
    masks = {}
    for i in range(N):
        for c in store.categories:
            if c in store.image_level_categories:
                continue
            for layer in store.pixel_layers(i, c):
                for n in np.unique(layer):
                    if n:
                        masks.setdefault(int(n), np.zeros((N, sh, sw), bool))[i] |= layer == n
    # six labels covering between 0.5% and 30% of the pixels, all different masks (synthetic world v2:
    # objects, parts and materials cover about 1% each)
    chosen = [n for n, m in sorted(masks.items()) if 0.005 < m.mean() < 0.3][:6]
    assert len(chosen) == 6
    det = np.stack([masks[n] for n in chosen], 1).astype(np.float32)  # [N, 6, sh, sw]: no upsampling needed
    noise = np.random.default_rng(0).standard_normal((N, 18, sh, sw)).astype(np.float32)
    acts = np.concatenate([det, noise], 1)
    np.save(root / "planted.npy", acts)
    q = float(max(masks[n].mean() for n in chosen) + 0.05)  # top quantile reaches into the zeros: T = 0
    return root, chosen, q


def _score(root, q, name, *extra):
    rc = main(["score", "--store", str(root / "store"), "--activations", str(root / "planted.npy"), "--out",
               str(root / "out"), "--name", name, "--quantile", str(q), "--quiet", "--workers", "0", "--device", "cpu",
               "--no-report", *extra])
    assert rc == 0
    d = root / "out" / name
    return json.loads((d / "result.json").read_text()), np.load(d / "iou.npy")


def test_rotation_loses_planted_detectors(planted):
    root, chosen, q = planted
    doc, iou = _score(root, q, "axes")
    assert [u["iou"] for u in doc["units"][:6]] == [1.0] * 6  # six exact detectors
    assert [u["number"] for u in doc["units"][:6]] == chosen
    assert max(u["iou"] for u in doc["units"][6:]) < 0.5
    rdoc, riou = _score(root, q, "rotated", "--rotate", "0")
    assert rdoc["settings"]["basis"]["kind"] == "rotate" and rdoc["settings"]["basis"]["seed"] == 0
    best = [u["iou"] for u in rdoc["units"]]
    assert max(best) < 0.5  # no detector survives the rotation
    # another seed, another basis
    sdoc, _ = _score(root, q, "rotated1", "--rotate", "1")
    assert sdoc["settings"]["basis"]["sha256"] != rdoc["settings"]["basis"]["sha256"]


def test_identity_basis_changes_nothing(planted):
    root, chosen, q = planted
    np.save(root / "eye.npy", np.eye(24))
    doc, iou = _score(root, q, "axes_again")
    bdoc, biou = _score(root, q, "identity", "--basis", str(root / "eye.npy"))
    assert np.array_equal(iou, biou)
    assert np.array_equal(np.load(root / "out" / "axes_again" / "thresholds.npy"),
                          np.load(root / "out" / "identity" / "thresholds.npy"))
    assert bdoc["settings"]["basis"]["kind"] == "file" and bdoc["settings"]["basis"]["orthogonality_error"] == 0.0
    assert bdoc["units"] == doc["units"]


def test_bad_basis(planted, capsys):
    root, _chosen, q = planted
    np.save(root / "small.npy", np.eye(5))
    rc = main(["score", "--store", str(root / "store"), "--activations", str(root / "planted.npy"), "--out",
               str(root / "out"), "--name", "bad", "--quiet", "--workers", "0", "--basis", str(root / "small.npy")])
    assert rc in (1, 2) and "must be 24 x 24" in capsys.readouterr().err


def test_explain_uses_the_recorded_basis(planted):
    from dissect.engine._basis import random_orthogonal
    from dissect.explain.layer import explain_activations
    from dissect.explain.run import explain_result

    root, _chosen, q = planted
    _score(root, q, "rot_explain", "--rotate", "3")
    d = root / "out" / "rot_explain"
    ex = explain_result(d, activations=root / "planted.npy", length=2, beam=3)
    acts = np.load(root / "planted.npy")
    rotated = np.einsum("ij,njyx->niyx", random_orthogonal(24, 3), acts.astype(np.float64)).astype(np.float32)
    plain = explain_activations(rotated, np.load(d / "thresholds.npy"), BrodenStore(root / "store"), length=2, beam=3)
    assert [r["formula"] for r in ex.rows()] == [r["formula"] for r in plain.rows()]
    assert ex.settings["basis"]["seed"] == 3
