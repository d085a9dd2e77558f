"""Nothing hangs, nothing grows without bound (issue 25, kind 5).

Each case runs the real command in a subprocess under a timeout far above its normal time; the
oracle is the exit within that time, the message naming the culprit, and (for the file limit) a
result equal to the one without the limit.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torchvision  # noqa: F401  (the subprocesses import it too)

from broden_builder.store.reader import BrodenStore
from conftest import REPO

LAYERS16 = [f"layer{a}.{b}.{m}" for a in (1, 2) for b in (0, 1) for m in ("conv1", "bn1", "conv2", "bn2")]


def _cmd(module: str, *args: str, timeout: int = 240, preexec=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)


def _one_error(p: subprocess.CompletedProcess, rc: int, *fragments: str) -> str:
    assert p.returncode == rc, (p.stdout, p.stderr[-3000:])
    assert "Traceback" not in p.stderr and "this is a bug" not in p.stderr, p.stderr[-3000:]
    for f in fragments:
        assert f in p.stderr, (f, p.stderr[-3000:])
    return p.stderr


@pytest.mark.parametrize("which", ["label", "image"])
def test_a_fifo_in_the_store_fails_fast(synthetic_store, tmp_path, which):
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    row = BrodenStore(store).rows[3]
    rel = row.image if which == "image" else row.cells["object"][0]
    target = store / "images" / rel
    target.unlink()
    os.mkfifo(target)
    p = _cmd("dissect.cli", "run", "--store", str(store), "--model", "resnet18", "--weights", "none", "--layer",
             "layer1", "--out", str(tmp_path / "out"), "--quiet", "--no-report", "--workers", "0", timeout=180)
    _one_error(p, 1, rel, "FIFO")


def test_a_fifo_given_to_the_image_decoder_is_refused_before_open(tmp_path):
    from broden_builder.sources import BadSourceItem
    from broden_builder.sources.common import read_mask_file
    from broden_builder.sources.decode import load_image

    import signal

    def hung(*_):
        raise TimeoutError("opened the FIFO: blocked")

    os.mkfifo(tmp_path / "x.png")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)  # without the check, open() blocks: this turns the hang into a failure
    try:
        with pytest.raises(BadSourceItem, match="FIFO"):
            load_image(tmp_path / "x.png")
        with pytest.raises(BadSourceItem, match="FIFO"):
            read_mask_file(tmp_path / "x.png")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_fifo_among_source_images_fails_fast(tmp_path):
    from test_folder import make_folder

    make_folder(tmp_path / "src")
    (tmp_path / "src" / "images" / "f1.png").unlink()
    os.mkfifo(tmp_path / "src" / "images" / "f1.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"size: 32\nmin_frequency: 1\nsources:\n- type: folder\n  images: {tmp_path}/src/images\n"
                      f"  masks: {tmp_path}/src/masks\n  labels: {tmp_path}/src/labels.csv\n  category: shape\n")
    p = _cmd("broden_builder.cli", "build", str(recipe), "--out", str(tmp_path / "store"), timeout=180)
    assert "Traceback" not in p.stderr
    if p.returncode == 0:  # not listed as an image (the folder source lists regular files): never stored
        assert not any("f1" in r.image for r in BrodenStore(tmp_path / "store").rows)
    else:
        _one_error(p, 1, "f1.png", "FIFO")


def _limit_files(n: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return set_limit


def test_sixteen_layers_under_ulimit_64_do_not_hang(synthetic_store, tmp_path):
    args = ["run", "--store", str(synthetic_store), "--model", "resnet18", "--weights", "none", "--out"]
    tail = [a for layer in LAYERS16 for a in ("--layer", layer)] + ["--quiet", "--no-report", "--workers", "2"]
    p = _cmd("dissect.cli", *args, str(tmp_path / "low"), *tail, timeout=300, preexec=_limit_files(64))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "open-file limit" in p.stderr
    q = _cmd("dissect.cli", *args, str(tmp_path / "free"), *tail, timeout=300)
    assert q.returncode == 0, q.stderr[-3000:]
    for layer in LAYERS16:  # the same result with fewer workers
        assert (tmp_path / "low" / layer / "tally.csv").read_bytes() == (tmp_path / "free" / layer / "tally.csv").read_bytes()


@pytest.mark.parametrize("args, fragment", [
    (["--workers", "1000"], "--workers: must lie in 0..64"),
    (["--input-size", "100000"], "--input-size: sizes must be at most 8192"),
    (["--batch-size", "99999999999"], "--batch-size: must lie in 1..65536"),
    (["--top-k", "100000000"], "--top-k: must lie in"),
])
def test_values_that_size_allocations_are_bounded(synthetic_store, tmp_path, args, fragment):
    p = _cmd("dissect.cli", "run", "--store", str(synthetic_store), "--model", "resnet18", "--weights", "none",
             "--layer", "layer1", "--out", str(tmp_path / "o"), *args, timeout=120)
    _one_error(p, 2, fragment)
    assert not (tmp_path / "o").exists()


def test_config_bounds_workers_for_the_api():
    from dissect.config import DissectConfig
    from dissect.errors import DissectError

    with pytest.raises(DissectError, match="workers must be at most 64, got 1000"):
        DissectConfig(workers=1000)


def test_recipe_count_is_bounded_before_anything_is_allocated(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: 32\nsources:\n- type: synthetic\n  count: 100000000\n")
    p = _cmd("broden_builder.cli", "build", str(recipe), "--out", str(tmp_path / "store"), timeout=60)
    _one_error(p, 1, str(recipe), "count", "1000000")
    assert not (tmp_path / "store").exists()


def test_ablate_huge_unit_number_is_a_message(tmp_path):
    from test_ablate import COLORNET_SOURCE, _folder

    folder = _folder(tmp_path / "data")
    (tmp_path / "colornet.py").write_text(COLORNET_SOURCE)
    p = _cmd("dissect.cli", "ablate", "--model", f"{tmp_path / 'colornet.py'}:colornet", "--layer", "features",
             "--data", str(folder), "--out", str(tmp_path / "out"), "--input-size", "8", "--units",
             "99999999999999999999", timeout=120)
    _one_error(p, 1, "99999999999999999999", "out of range")
