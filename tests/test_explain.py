"""Compositional explanations: the vectorised beam search against plain references."""
from __future__ import annotations

import numpy as np
import pytest

from dissect.explain import Formula, MaskCounts, beam_search
from explain_reference import compexp_search, exhaustive, pack, plain_store_masks


def _random_case(rng, L=4, U=3, P=60, p_label=0.3, p_unit=0.25):
    labels = rng.random((L, P)) < p_label
    units = rng.random((U, P)) < p_unit
    return labels, units


def _plain_iou(formula: Formula, labels, unit) -> float:
    m = formula.evaluate(labels)
    inter = int((m & unit).sum())
    den = int(m.sum()) + int(unit.sum()) - inter
    return inter / den if den else 0.0


@pytest.mark.parametrize("seed", range(6))
def test_wide_beam_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    labels, units = _random_case(rng)
    res = beam_search(MaskCounts.from_dense(labels, units), length=3, beam=10_000)
    packed = pack(labels)
    for u in range(units.shape[0]):
        best = exhaustive(packed, pack(units[u]), length=3)
        assert res.iou[u].item() == pytest.approx(best, abs=0, rel=1e-15)
        # the reported formula really has that IoU (evaluated plainly on the masks)
        assert _plain_iou(res.formula(u), labels, units[u]) == pytest.approx(best, rel=1e-15)
        assert len(res.formula(u)) <= 3


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("length,beam", [(3, 5), (2, 3), (3, 1), (1, 5), (4, 2)])
def test_default_beam_equals_plain_compexp_loop(seed, length, beam):
    rng = np.random.default_rng(100 + seed)
    labels, units = _random_case(rng, L=6, U=4, P=80)
    labels[2] = False  # a label that never occurs is no candidate
    units[3] = False  # a unit that never fires has no explanation
    res = beam_search(MaskCounts.from_dense(labels, units), length=length, beam=beam)
    packed = pack(labels)
    for u in range(units.shape[0]):
        f, v, single, sv = compexp_search(packed, pack(units[u]), length=length, beam=beam)
        if f is None:
            assert res.formula(u) == Formula() and res.iou[u].item() == 0 and res.single_label[u].item() == -1
            continue
        assert res.formula(u) == Formula(*f), (u, res.formula(u), f)
        assert res.iou[u].item() == v
        assert res.single_label[u].item() == single and res.single_iou[u].item() == sv


def _planted(rng, P=400):
    labels = rng.random((6, P)) < 0.25
    labels[0] = rng.random(P) < 0.4  # A: larger than B, so A ranks first as a seed
    labels[1] = rng.random(P) < 0.2  # B
    return labels


@pytest.mark.parametrize("seed", range(3))
def test_unit_a_or_b_is_explained_by_a_or_b(seed):
    labels = _planted(np.random.default_rng(seed))
    unit = labels[0] | labels[1]
    res = beam_search(MaskCounts.from_dense(labels, unit[None]), length=3, beam=5)
    assert res.formula(0) == Formula((0, 1), (0,))
    assert res.formula(0).text(["A", "B", "c", "d", "e", "f"]) == "A OR B"
    assert res.iou[0].item() == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_unit_a_and_not_b_is_explained_by_a_and_not_b(seed):
    labels = _planted(np.random.default_rng(seed))
    unit = labels[0] & ~labels[1]
    res = beam_search(MaskCounts.from_dense(labels, unit[None]), length=3, beam=5)
    assert res.formula(0) == Formula((0, 1), (2,))
    assert res.iou[0].item() == 1.0


def test_formula_text_parenthesises_inner_parts():
    names = {3: "water", 7: "river", 9: "blue-c"}
    assert Formula((3, 7, 9), (0, 2)).text(names) == "(water OR river) AND NOT blue-c"
    assert Formula((3,), ()).text(names) == "water"
    assert Formula().text(names) == ""
    with pytest.raises(ValueError):
        Formula((1, 2), ())


def test_counts_group_pixels_without_changing_counts():
    rng = np.random.default_rng(5)
    labels, units = _random_case(rng, L=5, U=3, P=200)
    c = MaskCounts.from_dense(labels, units)
    assert c.n_atoms < 200  # identical label sets share an atom
    assert c.label_area().tolist() == labels.sum(1).tolist()
    assert c.mask_size().tolist() == units.sum(1).tolist()
    assert int(c.w.sum()) == 200


def test_layer_explanations_equal_plain_compexp_on_a_store(synthetic_store):
    from broden_builder.store.reader import BrodenStore
    from dissect.explain.layer import explain_activations

    store = BrodenStore(synthetic_store)
    rng = np.random.default_rng(0)
    N = len(store.rows)
    acts = rng.standard_normal((N, 6, 4, 4)).astype(np.float32)
    acts[:, 5] = -1.0  # a unit that never fires
    thr = np.quantile(acts.transpose(1, 0, 2, 3).reshape(6, -1), 0.9, axis=1).astype(np.float32)
    thr[5] = 0.0
    ex = explain_activations(acts, thr, store, length=3, beam=5, batch_size=7)
    lab, units = plain_store_masks(store, acts, thr, ex.numbers)
    assert ex.settings["images"] == N
    packed = pack(lab)
    rows = ex.rows()
    for u in range(6):
        f, v, single, sv = compexp_search(packed, pack(units[u]), length=3, beam=5)
        assert rows[u]["unit"] == u + 1
        if f is None:
            assert rows[u]["formula"] == "" and rows[u]["iou"] == 0 and u == 5
            continue
        assert ex.search.formula(u) == Formula(*f)
        assert rows[u]["iou"] == v and rows[u]["single_iou"] == sv
        assert rows[u]["formula"] == Formula(*f).text(lambda c: ex.names[ex.numbers[c]])
        assert rows[u]["single_label"] == ex.names[ex.numbers[single]]
    assert sum(1 for r in rows if r["length"] > 1) >= 3  # compositions do win on random units


def test_explanations_csv_round_trip(tmp_path):
    import csv

    from dissect.explain.output import read_explanations, write_explanations

    class _Ex:
        settings, timings = {"length": 3}, {}

        def rows(self):
            return [{"unit": 1, "formula": "(water, deep OR river) AND NOT blue-c", "iou": 0.25, "single_iou": 0.125,
                     "single_label": "water, deep", "length": 3},
                    {"unit": 2, "formula": "", "iou": 0.0, "single_iou": 0.0, "single_label": "", "length": 0}]

    path = write_explanations(tmp_path / "layer4", _Ex())
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["unit", "formula", "iou", "single_iou"]
    assert rows[1][1] == "(water, deep OR river) AND NOT blue-c" and float(rows[1][2]) == 0.25
    back = read_explanations(tmp_path / "layer4")
    assert back[1]["formula"] == "(water, deep OR river) AND NOT blue-c" and back[2]["formula"] == ""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "explanations.csv").write_text("unit,formula,iou,single_iou\nx,a,1,1\n")
    with pytest.raises(ValueError, match="row 2"):
        read_explanations(tmp_path / "bad")
