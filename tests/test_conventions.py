"""Conventions a new user expects (issue 24, item 8): every API error a DissectError, one --device
default, a compact table, typed packages, preprocess without warnings on PIL arrays."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dissect import DissectError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scored(synthetic_store, tmp_path_factory):
    """A result of random activations [N, 3, h, w], in memory (no folder) and written to out/."""
    from broden_builder import BrodenStore
    from dissect import Dissection

    store = BrodenStore(synthetic_store)
    r0 = store.rows[0]
    acts = np.random.default_rng(0).standard_normal((len(store), 3, r0.sh, r0.sw)).astype(np.float32)
    out = tmp_path_factory.mktemp("conv") / "out"
    kw = dict(name="feats", workers=0, quiet=True, report=False)
    return (Dissection.score(acts, synthetic_store, **kw), Dissection.score(acts, synthetic_store, out=out, **kw),
            acts, out)


def _raises_dissect_error(fn):
    with pytest.raises(DissectError) as e:
        fn()
    assert str(e.value) and not str(e.value).startswith("'")  # a readable message, not a quoted key
    return e.value


def test_every_api_error_is_a_dissect_error(scored, synthetic_store, tmp_path):
    from dissect import Dissection, DissectionResult
    from dissect.tools import top_images, unit_masks, write_compare

    mem, written, acts, out = scored
    _raises_dissect_error(lambda: Dissection(nn.Identity(), "x", synthetic_store, quantil=0.1))
    _raises_dissect_error(lambda: mem["nolayer"])
    _raises_dissect_error(lambda: mem.explain(acts))  # bare ValueError before (issue 24)
    _raises_dissect_error(lambda: mem.report())
    _raises_dissect_error(lambda: written.explain(acts[:, :2]))  # 2 units for a 3-unit layer
    _raises_dissect_error(lambda: DissectionResult.load(tmp_path))
    _raises_dissect_error(lambda: mem.units_for("no-such-concept"))
    _raises_dissect_error(lambda: top_images(mem["feats"], 99, store=synthetic_store))
    _raises_dissect_error(lambda: write_compare([], tmp_path / "cmp"))
    _raises_dissect_error(lambda: write_compare([tmp_path], tmp_path / "cmp"))
    conv = nn.Conv2d(3, 4, 1)
    _raises_dissect_error(lambda: unit_masks(conv, "", torch.zeros(1, 3, 8, 8), np.zeros(3, np.float32)))
    e = _raises_dissect_error(lambda: mem["nolayer"])
    assert isinstance(e, KeyError)  # still a KeyError for code that caught that


def test_compact_table(scored):
    mem = scored[0]
    full, compact = mem.table(), mem.table(compact=True)
    assert [list(r) for r in compact] == [["layer", "unit", "label", "category", "iou"]] * 3
    assert [{k: r[k] for k in ("layer", "unit", "label", "category", "iou")} for r in full] == compact


def test_one_device_default_across_subcommands():
    from dissect.cli import build_parser
    from dissect.config import DissectConfig

    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    defaults = {}
    for name, sub in subs.items():
        for action in sub._actions:
            if "--device" in action.option_strings:
                defaults[name] = action.default
    assert set(defaults) >= {"run", "score", "layers", "explain", "ablate"}
    assert set(defaults.values()) == {DissectConfig().device}, defaults


def test_packages_are_typed():
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for pkg in ("dissect", "broden_builder"):
        assert (REPO / pkg / "py.typed").is_file() and "py.typed" in data[pkg]


def test_preprocess_takes_pil_images_and_their_read_only_arrays_without_warning():
    from PIL import Image

    from dissect import preprocess

    rgb = np.zeros((6, 4, 3), np.uint8)
    rgb[..., 0] = 255
    im = Image.fromarray(rgb)
    arr = np.asarray(im)
    assert not arr.flags.writeable  # what np.asarray gives for a PIL image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = preprocess([arr], size=4), preprocess([im], size=4)
    # oracle: red 1.0 and blue/green 0 normalised with ImageNet's mean/std, by hand
    assert torch.allclose(a[0, 0], torch.full((4, 4), (1 - 0.485) / 0.229))
    assert torch.allclose(a[0, 2], torch.full((4, 4), (0 - 0.406) / 0.225))
    assert torch.equal(a, b)
    with pytest.raises(DissectError, match="H x W x 3"):
        preprocess([np.zeros((4, 4), np.uint8)])
