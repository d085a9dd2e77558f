"""The engine's shape (issue 23): the pixels are counted by one function, the statistics declare
their state once, and the run's skeleton is written once.

Oracles: the source (who calls ``Tally.add_activations``), and round trips of the declared state
against hand-made values.
"""
from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
import torch

from dissect.stats import Tally, TopKImages, TopQuantile
from dissect.stats.tally import COUNTS

REPO = Path(__file__).resolve().parents[1]


def _callers(attr: str) -> set:
    """(module, function) of every call ``x.<attr>(...)`` in dissect/ outside dissect/stats."""
    out = set()
    for path in sorted((REPO / "dissect").rglob("*.py")):
        if "stats" in path.relative_to(REPO / "dissect").parts[:1]:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == attr:
                        out.add((path.relative_to(REPO / "dissect").as_posix(), fn.name))
    return out


def test_pixels_are_counted_by_one_function():
    """Workers and devices both count through engine._tally_batches.count_batch."""
    assert _callers("add_activations") == {("engine/_tally_batches.py", "count_batch")}
    callers = _calls_of("count_batch")
    assert {f for _, f in callers} == {"_count", "add"}, callers  # the worker's and the device's


def _own_nodes(fn):
    """The nodes of function ``fn`` outside the functions nested in it."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _calls_of(name: str) -> set:
    """(file, innermost function) of every call ``name(...)`` in dissect/engine."""
    out = set()
    for path in sorted((REPO / "dissect" / "engine").glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in _own_nodes(fn):
                    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                        out.add((path.name, fn.name))
    return out


def test_run_skeleton_written_once():
    """Only Run.passes decides between resuming and pass 1; both entry points call it."""
    assert {f for _, f in _calls_of("run_pass")} == {"pass1", "pass2"}
    src = (REPO / "dissect" / "engine" / "_runner.py").read_text("utf-8")
    assert src.count("run.passes(") == 2 and 'state["pass"] == 1' not in src


def _tally(units=None):
    return Tally([1, 2, 3], ["object", "color"], [], {1: "object", 2: "object", 3: "color"}, units=units)


def test_tally_state_declared_once():
    t = _tally(units=2)
    assert set(t.state_dict()) == {"labels", "categories", "primary", "units", "images", *COUNTS}
    assert t.sum_keys == ("I", "G", "A_original", "A_lite", "A_all", "images")
    for name, value in zip(COUNTS, range(1, 6)):
        getattr(t, name).fill_(value)
    t.images = 7
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    back = _tally()
    back.load_state_dict(torch.load(buf, weights_only=True))
    assert back.units == 2 and back.images == 7
    assert [int(getattr(back, n).sum()) for n in COUNTS] == [6 * 1, 3 * 2, 4 * 3, 4 * 4, 2 * 5]  # shapes x value
    back.merge(t)
    assert int(back.I.sum()) == 12 and back.images == 14
    with pytest.raises(ValueError, match="different labels, categories, primary"):
        back.merge(Tally([1, 2], ["object"], [], {1: "object", 2: "object"}, units=2))


def test_topk_and_quantile_identity_checked():
    a, b = TopKImages(3, 2), TopKImages(3, 4)
    with pytest.raises(ValueError, match="different units, k"):
        a.merge(b)
    with pytest.raises(ValueError, match="different units, quantile, total_count"):
        TopQuantile(3, 0.1, 100).load_state_dict(TopQuantile(3, 0.1, 50).state_dict())
    k = TopKImages(2, 2)
    k.add(torch.arange(24, dtype=torch.float32).reshape(3, 2, 2, 2), [5, 6, 7])
    k2 = TopKImages(2, 2)
    k2.load_state_dict(k.state_dict())
    assert k2.indices.tolist() == [[7, 6], [7, 6]] and k2.maps.dtype == torch.float16


def test_device_path_counts_like_the_workers(synthetic_store, tmp_path, monkeypatch):
    """Pass 2 counted in the main process (the accelerator's path, forced here on the CPU) gives the
    worker path's counts, which tests/test_tally_batches.py checks against a plain reference."""
    import numpy as np

    from dissect import DissectConfig
    from dissect.engine import _passes, score_activations

    acts = np.random.default_rng(1).standard_normal((60, 4, 4, 4)).astype(np.float32)
    cfg = DissectConfig(workers=0, quiet=True, batch_size=7, quantile=0.05, device="cpu")
    workers = score_activations(acts, synthetic_store, cfg, out=tmp_path / "w", name="a")
    monkeypatch.setattr(_passes, "TallySpec", lambda *a, **k: None)  # no spec: the main process counts
    device = score_activations(acts, synthetic_store, cfg, out=tmp_path / "d", name="a")
    assert np.array_equal(workers.iou, device.iou) and workers.units == device.units
    assert (tmp_path / "w" / "a" / "tally.csv").read_bytes() == (tmp_path / "d" / "a" / "tally.csv").read_bytes()
