"""Numeric settings are refused when the config is made, never after the passes (brk2 review).

Oracle: the documented ranges (README "Other options": --quantile is a fraction in (0, 1),
--iou-threshold an IoU, which lies in [0, 1]); NaN and inf lie in no range. Before the fix
``--iou-threshold nan`` ran both passes and died writing result.json ("Out of range float
values are not JSON compliant"), -1 made every unit a detector, and ``--mean nan,0,0`` was
blamed on the layer's activations.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import build_synthetic
from dissect import DissectConfig, DissectError
from dissect.cli import main


@pytest.mark.parametrize("kw", [dict(iou_threshold=math.nan), dict(iou_threshold=-1.0), dict(iou_threshold=1.5),
                                dict(iou_threshold=math.inf), dict(quantile=math.nan),
                                dict(mean=(math.nan, 0.0, 0.0)), dict(std=(1.0, math.inf, 1.0))])
def test_bad_numbers_refused_at_construction(kw):
    with pytest.raises(DissectError, match=next(iter(kw))):
        DissectConfig(**kw)


@pytest.mark.parametrize("v", [0.0, 0.04, 1.0])
def test_iou_threshold_range_accepted(v):
    assert DissectConfig(iou_threshold=v).iou_threshold == v


def test_cli_nan_iou_threshold_writes_nothing(tmp_path, capsys):
    store = build_synthetic(tmp_path / "store", count=6)
    acts = tmp_path / "a.npy"
    np.save(acts, np.zeros((6, 2, 2, 2), np.float32))
    out = tmp_path / "o"
    rc = main(["score", "--store", str(store), "--activations", str(acts), "--out", str(out),
               "--iou-threshold", "nan", "--quiet", "--no-report"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "iou_threshold" in err and "Traceback" not in err
    assert not (out / "a").exists()
