"""One owner per artifact (issue 23): dissect.results is the only reader of ``O/<layer>/``'s result
files, the one summary and the one store opener with one fingerprint policy.

Oracles: the source (no other module joins a result file name onto a path), hand-counted
summaries, and a store whose fingerprint is not the recorded one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dissect.results import RESULT_FILES, ResultsError, open_store, summarise

REPO = Path(__file__).resolve().parents[1]


def test_only_results_py_opens_result_files():
    """No module but dissect/results.py builds a path to result.json, tally.csv, iou.npy, ... ."""
    bad = []
    for path in sorted((REPO / "dissect").rglob("*.py")):
        if path == REPO / "dissect" / "results.py":
            continue
        tree = ast.parse(path.read_text("utf-8"))
        in_messages = {id(n) for j in ast.walk(tree) if isinstance(j, ast.JoinedStr) for n in ast.walk(j)}
        for node in ast.walk(tree):
            if id(node) in in_messages:
                continue  # a message naming the file, not a read
            names = ()
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
                names = (node.right.value,)
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("glob", "rglob"):
                names = tuple(str(a.value).rsplit("/", 1)[-1] for a in node.args if isinstance(a, ast.Constant))
            if any(n in RESULT_FILES for n in names):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, f"result files read outside dissect/results.py: {bad}"


UNITS = [  # two detectors of 'object' with the same label, one of 'color', a non-detector, one without a flag
    {"unit_index": 0, "label": "dog", "number": 5, "category": "object", "iou": 0.2, "detector": True},
    {"unit_index": 1, "label": "dog", "number": 5, "category": "object", "iou": 0.1, "detector": True},
    {"unit_index": 2, "label": "red-c", "number": 1, "category": "color", "iou": 0.05, "detector": True},
    {"unit_index": 3, "label": "cat", "number": 6, "category": "object", "iou": 0.01, "detector": False},
    {"unit_index": 4, "label": "sky", "number": 9, "category": "scene", "iou": 0.3},
]


def test_summarise_by_hand():
    s = summarise(UNITS, ["color", "object", "part"], iou_threshold=0.25)
    assert s["units"] == 5 and s["detectors"] == 4  # unit 4 has no flag: IoU 0.3 >= 0.25
    assert s["per_category"] == {"color": 1, "object": 2, "part": 0, "scene": 1}
    assert s["unique_detectors"] == {"color": 1, "object": 1, "part": 0, "scene": 1}
    assert s["concepts"] == {"color": {"red-c": 1}, "object": {"dog": 2}, "part": {}, "scene": {"sky": 1}}
    assert summarise(UNITS, ["object"], iou_threshold=0.5)["detectors"] == 3  # unit 4 below 0.5


def test_one_fingerprint_policy(synthetic_store, tmp_path):
    from broden_builder.store.reader import BrodenStore

    real = BrodenStore(synthetic_store).fingerprint()
    doc = {"layer": "l", "store": {"path": str(synthetic_store), "fingerprint": real}}
    assert open_store(doc).root == BrodenStore(synthetic_store).root          # the recorded store
    assert open_store(doc, str(synthetic_store)).fingerprint() == real         # given as a folder
    other = dict(doc, store={"path": str(synthetic_store), "fingerprint": "0" * 64})
    for given in (None, str(synthetic_store), BrodenStore(synthetic_store)):
        with pytest.raises(ResultsError, match="is not the store layer l was dissected on"):
            open_store(other, given)
    with pytest.raises(ResultsError, match="not found"):
        open_store(dict(doc, store={"path": str(tmp_path / "gone")}))
    with pytest.raises(ResultsError, match="records no store"):
        open_store({"layer": "l"})
