"""Every setting is checked against its declared type when the config is made, from Python and from a
`--config` file alike: a wrong type is one line naming the setting, the type and the value (never a
Python error text or 'this is a bug'), and nothing is taken silently for something else
(`keep_cache: "false"` is a string, not false). Oracle: the field types as DissectConfig declares them,
written out here by hand."""
from __future__ import annotations

import numpy as np
import pytest

from dissect import DissectConfig, DissectError
from dissect.config import read_config_file

WRONG = [
    ("batch_size", 64.5, "batch_size must be an integer, got 64.5 (float)"),
    ("batch_size", "64", "batch_size must be an integer, got '64' (str)"),
    ("batch_size", True, "batch_size must be an integer, got True (bool)"),
    ("top_k", 5.0, "top_k must be an integer, got 5.0 (float)"),
    ("top_k", True, "top_k must be an integer, got True (bool)"),
    ("workers", 1.5, "workers must be an integer or None, got 1.5 (float)"),
    ("keep_cache", "false", "keep_cache must be true or false, got 'false' (str)"),
    ("quiet", "no", "quiet must be true or false, got 'no' (str)"),
    ("label_cache", 0, "label_cache must be true or false, got 0 (int)"),
    ("iou_threshold", "0.04", "iou_threshold must be a number, got '0.04' (str)"),
    ("quantile", True, "quantile must be a number, got True (bool)"),
    ("mean", 0.5, "mean must be a list or None, got 0.5 (float)"),
    ("mean", ["a", 1, 2], "mean must be a list of numbers, got 'a'"),
    ("input_size", [64, "x"], "input_size must be a list of integers (height, width), got 'x'"),
    ("categories", ["object", 3], "categories must be a list of category names, got 3"),
    ("union", 3, "union must be a string, got 3 (int)"),
    ("device", ["cpu"], "device must be a string, got ['cpu'] (list)"),
    ("null", 2.5, "null must be an integer, got 2.5 (float)"),
    ("seed", "7", "seed must be an integer, got '7' (str)"),
]


@pytest.mark.parametrize("name, value, says", WRONG)
def test_a_wrong_type_is_refused_naming_setting_type_and_value(name, value, says):
    with pytest.raises(DissectError) as e:
        DissectConfig(**{name: value})
    assert says in str(e.value)


@pytest.mark.parametrize("name, least", [("workers", 0), ("checkpoint_every", 0), ("top_k", 1), ("batch_size", 1)])
def test_a_value_below_its_range_names_that_setting(name, least):
    with pytest.raises(DissectError, match=f"^{name} must be >= {least}, got -2$"):
        DissectConfig(**{name: -2})


def test_what_a_python_caller_naturally_gives_is_accepted_as_such(tmp_path):
    """numpy numbers become Python ones (result.json must hold them), paths stay paths, a single
    'A,B' string of categories is split as on the command line, one 'LAYER=FOLDER' string is one SAE."""
    c = DissectConfig(batch_size=np.int64(8), quantile=np.float32(0.25), input_size=np.int64(64),
                      mean=np.array([0.5, 0.5, 0.5]), categories="object,part", cache_dir=tmp_path,
                      sae="layer4=sae_folder", workers=None, threads=np.int32(2))
    assert type(c.batch_size) is int and c.batch_size == 8 and type(c.threads) is int
    assert type(c.quantile) is float and c.quantile == 0.25
    assert c.input_size == (64, 64) and c.mean == (0.5, 0.5, 0.5) and c.categories == ("object", "part")
    assert c.cache_dir == tmp_path and c.sae == (("layer4", "sae_folder"),)


def _read(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p, read_config_file(p)


def test_a_settings_file_can_set_the_null_unquoted(tmp_path):
    """YAML reads an unquoted `null:` key as null itself; the key is the setting `null`."""
    _, values = _read(tmp_path, "null: 5\nalpha: 0.2\ndetector: both\nseed: 3\n")
    assert values == {"null": 5, "alpha": 0.2, "detector": "both", "seed": 3}
    assert DissectConfig(**values).null == 5


@pytest.mark.parametrize("text, says", [
    ("batch_size: 64.5\n", "batch_size must be an integer, got 64.5 (float)"),
    ("keep_cache: \"false\"\n", "keep_cache must be true or false, got 'false' (str)"),
    ("mean: 0.5\n", "mean must be a list or None, got 0.5 (float)"),
    ("batch_size: 64\nbatch_size: 32\n", "key 'batch_size' given twice in one mapping (lines 1 and 2)"),
    ("quantile: [0.1\n", "invalid YAML (line 2, column 1"),
])
def test_a_bad_settings_file_is_one_line_naming_the_file(tmp_path, text, says):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    with pytest.raises(DissectError) as e:
        read_config_file(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and says in msg and "\n" not in msg and "bug" not in msg
