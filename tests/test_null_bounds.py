"""What --null N can make the program allocate is bounded and checked before any pass; a large N is
counted in groups made where they are counted (lazily), and the grouping changes no number."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dissect import DissectConfig
from dissect.engine import score_activations
from dissect.engine import _null_pass
from dissect.errors import DissectError
from dissect.stats import permutations
from dissect.stats.null import permutation

from test_null import CFG, _activations, _write_store

REPO = Path(__file__).resolve().parents[1]


def test_null_and_seed_out_of_range_are_refused_by_the_api():
    with pytest.raises(DissectError, match=r"null must be an integer in 0\.\.100,000, got 100000000"):
        DissectConfig(null=10**8)
    with pytest.raises(DissectError, match=r"seed must be an integer in 0\.\."):
        DissectConfig(null=10, seed=2**70)
    DissectConfig(null=100_000, seed=2**63 - 1)  # the limits themselves are allowed


@pytest.mark.parametrize("args, says", [(["--null", "100000000"], "must lie in 0..100000"),
                                        (["--null", "-1"], "must lie in 0..100000"),
                                        (["--null", "10", "--seed", str(2**70)], "must lie in 0..")])
def test_the_cli_refuses_them_at_once(tmp_path, args, says):
    r = subprocess.run([sys.executable, "-m", "dissect.cli", "score", "--store", str(tmp_path), "--activations",
                        str(tmp_path / "a.npy"), "--out", str(tmp_path / "o")] + args,
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_the_null_result_memory_is_checked_before_any_pass(tmp_path):
    """N x units float64 of best IoUs over every layer: refused over the budget, naming the size and the
    largest N that fits; the store is never opened (the check comes with the statistics, before pass 1)."""
    # 100,000 x (16,384 + 256) x 8 bytes = 12.4 GiB; 2 GiB // (8 x 16,640) = 16,131
    with pytest.raises(DissectError, match=r"--null 100,000 keeps 12\.4 GiB .* give --null 16,131 or fewer"):
        _null_pass.check_null_memory({"layer4.sae": 16384, "layer3": 256}, 100_000)
    _null_pass.check_null_memory({"layer4": 512}, 100_000)  # 0.4 GiB: allowed
    _null_pass.check_null_memory({"layer4": 10**9}, 0)  # no null: nothing kept
    acts = np.zeros((4, 8, 2, 2), np.float32)
    root = tmp_path / "store"
    _write_store(root, 4, 2, 1, seed=0)
    budget = _null_pass.NULL_RESULT_BUDGET
    try:
        _null_pass.NULL_RESULT_BUDGET = 8 * 8 * 99  # 99 permutations of 8 units
        with pytest.raises(DissectError, match=r"--null 100 keeps"):
            score_activations(acts, root, DissectConfig(**dict(CFG, null=100)), out=tmp_path / "out", name="a")
    finally:
        _null_pass.NULL_RESULT_BUDGET = budget
    assert not (tmp_path / "out" / "a").exists()


def test_groups_cover_every_permutation_once_within_their_budgets():
    """The groups' sizes respect the counts' and the permutations' budgets, a large N has at least
    _MIN_GROUPS groups (progress while it runs), and the lazily made groups equal the eager list."""
    n, seed = 63305, 3
    groups = _null_pass.layer_groups(100_000, n, seed, 512, 1376, 6)
    assert [g.start for g in groups] == sorted(g.start for g in groups)
    assert sum(g.count for g in groups) == 100_000 and groups[0].start == 0
    assert all(a.start + a.count == b.start for a, b in zip(groups, groups[1:]))
    assert all(g.count * n * 8 <= _null_pass._PERM_BUDGET for g in groups)
    assert all(g.count * 512 * (1376 + 12) * 8 <= _null_pass._COUNT_BUDGET for g in groups)
    assert len(_null_pass.layer_groups(100, 1000, seed, 8, 10, 2)) == 1  # small N: one group, one thresholding
    assert len(_null_pass.layer_groups(100_000, 1000, seed, 8, 10, 2)) >= _null_pass._MIN_GROUPS
    g = _null_pass.layer_groups(25, 50, seed, 8, 10, 2)
    made = np.concatenate([x.perms().numpy() for x in g])
    assert np.array_equal(made, np.stack([permutation(50, seed, k) for k in range(25)]))
    assert np.array_equal(permutations(50, seed, 5, start=20).numpy(), made[20:])


def test_splitting_the_null_into_many_groups_changes_no_number(tmp_path, monkeypatch):
    root = tmp_path / "store"
    truth = _write_store(root, 40, 6, 2, seed=0)
    acts = _activations(truth, 4, 6, True, seed=1)
    cfg = DissectConfig(**dict(CFG, null=30))
    one = score_activations(acts, root, cfg, out=tmp_path / "one", name="a")
    monkeypatch.setattr(_null_pass, "_MIN_GROUP_SIZE", 1)
    monkeypatch.setattr(_null_pass, "_MIN_GROUPS", 7)  # 30 permutations in groups of 5
    assert len(_null_pass.layer_groups(30, 40, 7, 11, 20, 6)) == 6
    many = score_activations(acts, root, cfg, out=tmp_path / "many", name="a")
    key = lambda r: [(u["p_value"], u["q_value"], u["null_iou"], u["null_iou_95"]) for u in r.units]
    assert key(one) == key(many)


def test_the_null_progress_counts_permutations_as_groups_end(tmp_path, monkeypatch):
    """Off a terminal the null's progress lines count permutations (not groups) out of N x layers, so a
    long null moves in a log file; it ends with every permutation counted."""
    from broden_builder.progress import progress_to

    root = tmp_path / "store"
    truth = _write_store(root, 20, 4, 2, seed=0)
    acts = _activations(truth, 2, 2, False, seed=1)
    monkeypatch.setattr(_null_pass, "_MIN_GROUP_SIZE", 1)
    monkeypatch.setattr(_null_pass, "_MIN_GROUPS", 4)  # 40 permutations in groups of 10
    got = []
    with progress_to(got.append):
        score_activations(acts, root, DissectConfig(**dict(CFG, null=40, quiet=False)), out=tmp_path / "o", name="a")
    lines = [e.text for e in got if not isinstance(e, str) and e.desc.startswith("null (40 permutations)")]
    assert lines[0] == "null (40 permutations): start, 40 permutations", lines
    assert any(t.startswith("null (40 permutations): 40/40 permutations (100%)") for t in lines), lines


def test_null_settings_without_the_null_are_said_to_have_no_effect(tmp_path, caplog):
    """--alpha / --seed only matter to the permutation null: given without --null, one warning says so."""
    import logging

    from dissect.cli import main

    root = tmp_path / "store"
    truth = _write_store(root, 8, 2, 1, seed=0)
    np.save(tmp_path / "a.npy", _activations(truth, 1, 1, False, seed=1))
    base = ["score", "--store", str(root), "--activations", str(tmp_path / "a.npy"), "--device", "cpu",
            "--workers", "0", "--no-report", "--quiet"]
    with caplog.at_level(logging.WARNING, logger="dissect"):
        assert main(base + ["--out", str(tmp_path / "o1"), "--alpha", "0.2", "--seed", "3"]) == 0
    said = [r.getMessage() for r in caplog.records if "no effect without --null" in r.getMessage()]
    assert said == ["--alpha 0.2 and --seed 3 have no effect without --null N (only the permutation null reads them)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dissect"):
        assert main(base + ["--out", str(tmp_path / "o2"), "--alpha", "0.2", "--null", "5"]) == 0
    assert not [r for r in caplog.records if "no effect" in r.getMessage()]
