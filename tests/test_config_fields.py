"""Settings declared once (issue 23): DissectConfig's fields give the CLI options, the settings a
result records and the checkpoint key; adding a setting touches dissect/config.py only.

Oracles: the options and the settings order the hand-written CLI and engine had before the
derivation (written out here), a listing of the places a field's name may appear outside
config.py, and a new field added in the test alone that must reach the CLI, result.json and the
checkpoint key.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from dissect import config as config_mod
from dissect.cli import _config, build_parser, main
from dissect.config import RUNTIME_ONLY, DissectConfig, recorded, setting

REPO = Path(__file__).resolve().parents[1]

#: The settings options each command offered when the CLI listed them by hand (cli.py at f5963d0).
SHARED = {"--device", "--batch-size", "--workers", "--threads", "--quantile", "--iou-threshold", "--union",
          "--categories", "--top-k", "--split", "--upsample", "--checkpoint-every", "--rotate", "--basis"}
PREPROCESSING = {"--input-size", "--mean", "--std"}
OPTIONS = {
    "run": SHARED | PREPROCESSING | {"--layout", "--cache-dtype", "--cache-dir", "--keep-cache"},
    "score": SHARED,
    "explain": SHARED | PREPROCESSING,
    "ablate": PREPROCESSING,
    "layers": {"--layout"},
}
#: result.json's settings as the engine wrote them by hand, in that order (engine.py at f5963d0).
RECORDED = ["quantile", "iou_threshold", "union", "upsample", "categories", "split", "top_k", "mean", "std",
            "cache_dtype", "batch_size"]


def _subparser(command: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command]


def _flags(command: str) -> dict:
    return {o: a.dest for a in _subparser(command)._actions for o in a.option_strings}


def test_every_field_is_declared_with_a_help_text():
    for f in dataclasses.fields(DissectConfig):
        assert f.metadata.get("help"), f"{f.name}: declare it with setting(default, help, ...)"
        assert set(f.metadata["cli"]) <= set(OPTIONS), f"{f.name}: unknown command in cli={f.metadata['cli']}"
    assert set(RUNTIME_ONLY) <= {f.name for f in dataclasses.fields(DissectConfig)}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_cli_offers_the_settings_it_offered(command):
    flags = _flags(command)
    missing = OPTIONS[command] - set(flags)
    assert not missing, f"dissect {command} lost {sorted(missing)}"
    for flag in OPTIONS[command]:
        assert flags[flag] == flag[2:].replace("-", "_")


def test_cli_values_reach_the_config():
    """Every `score` setting given a non-default value on the command line arrives in DissectConfig."""
    args = build_parser().parse_args(
        ["score", "--store", "S", "--activations", "A", "--out", "O", "--device", "cpu", "--batch-size", "7",
         "--workers", "2", "--threads", "3", "--quantile", "0.01", "--iou-threshold", "0.1", "--union", "lite",
         "--categories", "object,color", "--categories", "part", "--top-k", "4", "--split", "train",
         "--upsample", "nearest", "--checkpoint-every", "0", "--rotate", "5", "--quiet"])
    want = DissectConfig(device="cpu", batch_size=7, workers=2, threads=3, quantile=0.01, iou_threshold=0.1,
                         union="lite", categories=("object", "color", "part"), top_k=4, split="train",
                         upsample="nearest", checkpoint_every=0, rotate=5, quiet=True)
    assert _config(args) == want
    run = build_parser().parse_args(["run", "--store", "S", "--model", "m", "--layer", "l", "--out", "O",
                                     "--input-size", "48x64", "--mean", "0.5,0.5,0.5", "--std", "1,2,3",
                                     "--layout", "nhwc", "--cache-dtype", "float32", "--keep-cache"])
    assert _config(run) == DissectConfig(input_size=(48, 64), mean=(0.5, 0.5, 0.5), std=(1.0, 2.0, 3.0),
                                         layout="nhwc", cache_dtype="float32", keep_cache=True)
    assert _config(build_parser().parse_args(["score", "--store", "S", "--activations", "A", "--out", "O"])) \
        == DissectConfig()


def test_recorded_settings_are_the_ones_the_engine_wrote():
    assert list(recorded(DissectConfig())) == RECORDED
    got = recorded(DissectConfig(mean=(1, 2, 3), categories=["object"]))
    assert got["mean"] == [1.0, 2.0, 3.0] and got["categories"] == ["object"] and got["std"] is None


def _places() -> set:
    """(file, name) where a field's name is written outside config.py as the writers used to: a CLI
    flag (``"--iou-threshold"``), a key of a dict literal, ``d["name"] = ...`` or a keyword of ``dict(...)`` in the
    engine (the checkpoint key, the result settings) or the CLI."""
    names = {f.name for f in dataclasses.fields(DissectConfig)}
    flags = {"--" + n.replace("_", "-") for n in names}
    out = set()
    for path in [REPO / "dissect" / "cli.py", *sorted((REPO / "dissect" / "engine").glob("*.py"))]:
        rel = path.relative_to(REPO / "dissect").as_posix()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and node.value in flags:
                out.add((rel, node.value))
            elif isinstance(node, ast.Dict):
                out |= {(rel, k.value) for k in node.keys if isinstance(k, ast.Constant) and k.value in names}
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.slice, ast.Constant) and node.slice.value in names:
                out.add((rel, node.slice.value))
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
                out |= {(rel, k.arg) for k in node.keywords if k.arg in names}
    return out


#: The places allowed, each with why: options of commands that are not dissections (other
#: meanings, other defaults), and the activation cache's key (the preprocessing as resolved).
ALLOWED = {
    ("cli.py", "--input-size"): "dissect layers: the dummy input's size",
    ("cli.py", "--device"): "dissect layers / ablate: their own device (default cpu)",
    ("cli.py", "--split"): "dissect ablate: a split of an HF dataset",
    ("cli.py", "--batch-size"): "dissect ablate's own batches",
    ("cli.py", "--workers"): "dissect ablate's own DataLoader",
    ("engine/_runner.py", "input_size"): "the activation cache's key: the input size as resolved",
    ("engine/_runner.py", "mean"): "the activation cache's key: the preprocessing as resolved",
    ("engine/_runner.py", "std"): "the activation cache's key: the preprocessing as resolved",
    ("engine/_runner.py", "layout"): "the activation cache's key: the layout asked for",
    ("engine/_runner.py", "transform"): "the activation cache's key: the transform's description",
    ("engine/_runner.py", "split"): "the activation cache's key: the rows it holds",
    ("engine/_passes.py", "basis"): "the checkpoint key: the basis file by its bytes; each layer's basis record",
    ("engine/_passes.py", "rotate"): "the checkpoint key: the rotation's seed",
    ("engine/_passes.py", "categories"): "the categories as resolved against the store",
}


def test_field_names_are_written_only_where_listed():
    places = _places()
    extra = places - set(ALLOWED)
    assert not extra, ("settings listed by hand outside dissect/config.py (derive them from DissectConfig's "
                       f"fields instead): {sorted(extra)}")
    assert not set(ALLOWED) - places, f"ALLOWED lists places that are gone: {sorted(set(ALLOWED) - places)}"


def test_adding_a_setting_touches_one_file(tmp_path, monkeypatch, synthetic_store):
    """A field added to DissectConfig alone is a CLI option, a recorded setting and part of the key."""
    from dissect.engine._passes import Run

    fields = [("alpha", float, setting(0.25, "a new setting (default {default})"))]
    Extended = dataclasses.make_dataclass("DissectConfig", fields, bases=(DissectConfig,), frozen=True)
    monkeypatch.setattr(config_mod, "DissectConfig", Extended)
    for command in ("run", "score", "explain"):
        assert _flags(command)["--alpha"] == "alpha"
    assert "--alpha" not in _flags("ablate")
    store = synthetic_store
    acts = tmp_path / "a.npy"
    np.save(acts, np.random.default_rng(0).random((60, 2, 2, 2), dtype=np.float32))
    rc = main(["score", "--store", str(store), "--activations", str(acts), "--out", str(tmp_path / "o"),
               "--alpha", "0.5", "--quiet", "--no-report", "--workers", "0"])
    assert rc == 0
    settings = json.loads((tmp_path / "o" / "a" / "result.json").read_text())["settings"]
    assert settings["alpha"] == 0.5
    assert list(settings)[:len(RECORDED) + 1] == RECORDED + ["alpha"]
    from broden_builder.store.reader import BrodenStore

    key = Run(BrodenStore(store), Extended(alpha=0.75, workers=0), None, {}).key
    assert key["alpha"] == 0.75
    assert not set(RUNTIME_ONLY) & set(key)
