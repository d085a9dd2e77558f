"""`dissect sae train` and `--sae` on bad input: one clear line naming the file or value (issues F7, F8, M2).

Oracles: memory estimates and the largest F worked out by hand below from the formula in
dissect.sae._train.memory_estimate; the image names of index.csv rows read from the store;
counts of rows written here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from dissect.cli import main
from dissect.errors import DissectError
from sae_world import build_world

N, U, SIZE = 40, 16, 12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sae_inputs")
    store, acts, _, _ = build_world(root, n=N, k=8, units=U, size=SIZE)
    return root, store, acts


def _train(capsys, *args):
    rc = main(["sae", "train", "--threads", "1", "--device", "cpu", "-q", *[str(a) for a in args]])
    return rc, capsys.readouterr().err


# ---------------------------------------------------------------------------- F7: sizes bounded
@pytest.mark.parametrize(
    "option, value",
    [("--features", "100000000"), ("--chunk-mb", "0"), ("--chunk-mb", "2000000"), ("--batch-size", "1000000"),
     ("--k", "0"), ("--seed", "-1"), ("--threads", "0")],
)
def test_values_that_size_allocations_are_bounded_at_the_cli(world, tmp_path, capsys, option, value):
    root, store, acts = world
    with pytest.raises(SystemExit) as e:
        main(["sae", "train", "--activations", str(acts), "--out", str(tmp_path / "s"), option, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and option in err and value in err and "Traceback" not in err, err
    assert not (tmp_path / "s").exists()


def test_api_settings_are_bounded_too():
    from dissect.config import LIMITS
    from dissect.sae import TrainSettings

    with pytest.raises(DissectError, match=f"features must be at most {LIMITS['features']:,}"):
        TrainSettings(features=LIMITS["features"] + 1)
    with pytest.raises(DissectError, match="chunk_bytes"):
        TrainSettings(chunk_bytes=0)


def test_mem_available_reads_proc_meminfo(tmp_path):
    from dissect.sae._train import mem_available

    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       8000 kB\nMemFree:         100 kB\nMemAvailable:    2048 kB\n")
    assert mem_available(str(f)) == 2048 * 1024
    f.write_text("MemTotal:       8000 kB\n")
    assert mem_available(str(f)) is None
    assert mem_available(str(tmp_path / "absent")) is None


def test_a_model_larger_than_memory_is_refused_before_training(world, tmp_path, capsys, monkeypatch):
    """F = 1,000, U = 16, batch 1,024 (work rows max(1,024, 2,048) = 2,048), 40 images of 16 x 12 x 12
    float32 (9,216 bytes each, all in one chunk):
      model 16 x (2 x 1000 x 16 + 1000 + 16) = 528,256; work 16 x 1000 x 2048 = 32,768,000;
      chunk 3 x 40 x 9216 = 1,105,920; total 34,402,176 bytes.
    With 34,000,000 available: F <= (34,000,000 - 16 x 16 - 1,105,920) / (16 x 33 + 16 x 2048)
    = 32,893,824 / 33,296 = 987.9, so 987."""
    import dissect.sae._train as tr

    root, store, acts = world
    monkeypatch.setattr(tr, "mem_available", lambda: 34_000_000)
    rc, err = _train(capsys, "--activations", acts, "--out", tmp_path / "s", "--features", 1000, "--epochs", 1)
    assert rc != 0 and "34,402,176 bytes" in err and "largest --features that fits is 987" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "sae.json").exists() and not (tmp_path / "s" / ".sae_state.pt").exists()
    monkeypatch.setattr(tr, "mem_available", lambda: 34_402_176)  # exactly the estimate: trains
    rc, err = _train(capsys, "--activations", acts, "--out", tmp_path / "s", "--features", 1000, "--epochs", 1)
    assert rc == 0 and json.loads((tmp_path / "s" / "sae.json").read_text())["features"] == 1000, err
    # one byte less: refused; (34,402,175 - 256 - 1,105,920) / 33,296 = 33,295,999 / 33,296 -> 999
    monkeypatch.setattr(tr, "mem_available", lambda: 34_402_175)
    rc, err = _train(capsys, "--activations", acts, "--out", tmp_path / "s2", "--features", 1000, "--epochs", 1)
    assert rc != 0 and "largest --features that fits is 999" in err, err


# ---------------------------------------------------------------------------- F8: NaN, inf and row counts
@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_activations_are_named(world, tmp_path, capsys, value, kind):
    from broden_builder.store.reader import BrodenStore

    root, store, acts = world
    a = np.load(acts)
    a[6, 3, 2, 5] = value
    a[9, 11, 0, 0] = value
    bad = tmp_path / "bad.npy"
    np.save(bad, a)
    image = BrodenStore(store).rows[6].image
    rc, err = _train(capsys, "--activations", bad, "--store", store, "--layer", "L", "--out", tmp_path / "s")
    assert rc != 0 and "constant" not in err and "Traceback" not in err, err
    assert f"unit 3 (0-based) has {kind} activations on index.csv row 7 ({image})" in err, err
    assert "2 unit(s) are affected: [3, 11]" in err and "bad.npy" in err, err
    rc, err = _train(capsys, "--activations", bad, "--out", tmp_path / "s")  # no store: the file's row
    assert rc != 0 and f"unit 3 (0-based) has {kind} activations on image 7" in err, err


def test_activations_with_another_row_count_than_the_store_are_refused(world, tmp_path, capsys):
    root, store, acts = world
    short = tmp_path / "short.npy"
    np.save(short, np.load(acts)[: N - 5])
    rc, err = _train(capsys, "--activations", short, "--store", store, "--layer", "L", "--out", tmp_path / "s")
    assert rc != 0 and f"hold {N - 5} images" in err and f"has {N} rows" in err and "short.npy" in err, err
    assert not (tmp_path / "s" / "sae.json").exists()


# ---------------------------------------------------------------------------- M2: load errors name the file
def _tiny_sae(folder, **meta):
    from dissect.sae import save_sae

    w = {"W_enc": np.eye(2, 3), "b_enc": np.zeros(3), "W_dec": np.eye(3, 2), "b_dec": np.zeros(2)}
    return save_sae(folder, w, dict({"units": 2, "features": 3, "activation": "topk", "k": 1}, **meta))


@pytest.mark.parametrize(
    "make, named, says",
    [
        (lambda d: (d / "small.yaml").write_text("a: 1\n") and d / "small.yaml", "small.yaml", "not an SAE"),
        (lambda d: _tiny_sae(d / "s", k=100000), "sae.json", "1 <= k <= 3, got k = 100000"),
        (lambda d: _tiny_sae(d / "s", k="many"), "sae.json", "k must be a whole number, got 'many'"),
        (lambda d: _tiny_sae(d / "s", k=True), "sae.json", "k must be a whole number, got True"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty", "no sae.json"),
    ],
)
def test_every_sae_load_error_names_the_file_or_folder(tmp_path, monkeypatch, make, named, says):
    from dissect.sae import SAEError, load_sae

    monkeypatch.chdir(tmp_path)
    target = make(tmp_path)
    rel = target.relative_to(tmp_path)  # given as the user types it, relative to the working folder
    with pytest.raises(SAEError) as e:
        load_sae(rel)
    msg = str(e.value)
    assert named in msg and says in msg and not msg.startswith(".:"), msg


# ---------------------------------------------------------------------------- M3: features are not units
def test_feature_results_say_features_where_they_mean_features():
    """A summary of 640 SAE features, 15 detectors, 2 constant at 0: every line says "features"."""
    from dissect.report.html import layer_page
    from dissect.report.summary import summary_line
    from dissect.results import LayerResult, constant_text

    summary = {"units": 640, "detectors": 15, "per_category": {"object": 15}, "unique_detectors": {"object": 9},
               "constant": 2, "constant_values": {"0": 2}}
    res = LayerResult("features.14", np.zeros((640, 1), np.float32), np.zeros(640, np.float32), [], [], summary,
                      settings={"dissected": "feature"})
    line = res.summary_line()
    assert line == "features.14: 15/640 features are detectors (object 15); 2 of 640 features are constant (all 0)"
    assert constant_text(summary, "feature") == "2 of 640 features are constant (all 0)"
    assert constant_text(summary) == "2 of 640 units are constant (all 0)"  # units stay units
    assert summary_line("features.14", summary, "feature") == (
        "features.14: 15/640 features are detectors (object 15; unique concepts: object 9); "
        "2 of 640 features are constant (all 0)")
    page = layer_page("features.14", {"settings": {"dissected": "feature"}}, [], ["object"], summary, {}, None)
    assert "2 of 640 features are constant (all 0)" in page and "A constant feature's activations" in page
    assert "units are constant" not in page and "constant unit" not in page


# ---------------------------------------------------------------------------- F9: an SAE from elsewhere
class _Enc:
    def __init__(self, record):
        self.record = record


def _model(weights_sha):
    return {"kind": "torchvision", "name": "resnet18", "weights": {"checkpoint": "/x/w.pt", "sha256": weights_sha},
            "spec": "resnet18"}


@pytest.mark.parametrize(
    "sae_model, sae_store, run_key, warned",
    [
        (_model("a" * 64), "f" * 64, {"model": _model("a" * 64), "store": "f" * 64}, []),
        (_model("a" * 64), "f" * 64, {"model": _model("b" * 64), "store": "f" * 64}, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]),
        (_model("a" * 64), "f" * 64, {"model": _model("a" * 64), "store": "e" * 64}, ["ffffffffffff", "eeeeeeeeeeee"]),
        # the weights file moved: the same content, no warning
        (_model("a" * 64), None, {"model": dict(_model("a" * 64), weights={"checkpoint": "/y/w.pt", "sha256": "a" * 64}),
                                  "store": "e" * 64}, []),
        ({"kind": "activations", "file": "/a.npy", "content": "c" * 64}, None,
         {"source": {"kind": "activations", "file": "/b.npy"}, "content": "d" * 64, "store": "e" * 64},
         ["cccccccccccc", "dddddddddddd"]),
    ],
)
def test_an_sae_from_another_model_or_store_is_warned_about(caplog, sae_model, sae_store, run_key, warned):
    from dissect.engine._passes import warn_sae_origin

    rec = {"path": "/saes/l4", "model": sae_model}
    if sae_store:
        rec["store"] = {"path": "/stores/a", "fingerprint": sae_store}
    with caplog.at_level("WARNING"):
        warn_sae_origin({"layer4": _Enc(rec)}, run_key, "/stores/b")
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if not warned:
        assert lines == []
    else:
        assert len(lines) == 1 and "--sae layer4" in lines[0] and "/saes/l4" in lines[0], lines
        assert all(w in lines[0] for w in warned), lines


def test_score_with_an_sae_of_another_store_warns(world, tmp_path, caplog):
    """End to end: the SAE records the world's store; scoring on a copy whose label.csv differs warns once."""
    import shutil

    root, store, acts = world
    assert main(["sae", "train", "--activations", str(acts), "--store", str(store), "--layer", "L", "--out",
                 str(tmp_path / "sae"), "--epochs", "1", "--threads", "1", "-q"]) == 0
    other = tmp_path / "store2"
    shutil.copytree(store, other)
    with open(other / "label.csv", "a") as f:
        f.write("\n")
    for st, n in ((store, 0), (other, 1)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main(["score", "--store", str(st), "--activations", str(acts), "--out", str(tmp_path / f"o{n}"),
                         "--name", "L", "--quiet", "--device", "cpu", "--no-report", "--sae",
                         f"L={tmp_path / 'sae'}"]) == 0
        lines = [r.getMessage() for r in caplog.records if "--sae L" in r.getMessage()]
        assert len(lines) == n and all(str(other.resolve()) in m for m in lines), lines
