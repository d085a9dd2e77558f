"""Progress: bars on a terminal, whole lines when redirected, nothing under TQDM_DISABLE or -q.

Oracle: what reaches the terminal/pipe of a real `broden build` subprocess (a tqdm bar always
writes a carriage return).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from broden_builder.progress import env_disabled, progress


def _build(tmp_path, name, env_extra, tty: bool, quiet: bool = False):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"size": 32, "segmentation_size": 16, "min_frequency": 1,
                                      "sources": [{"type": "synthetic", "count": 8}]}))
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(env_extra)
    cmd = [sys.executable, "-m", "broden_builder.cli", "build", str(recipe), "--out", str(tmp_path / name)]
    cmd += ["-q"] if quiet else []
    if not tty:
        run = subprocess.run(cmd, env=env, capture_output=True)
        assert run.returncode == 0, run.stderr
        return run.stdout + run.stderr
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a pty starts 0 columns wide
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=slave, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=300) == 0, b"".join(chunks)
    finally:
        os.close(master)
    return b"".join(chunks)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_on_a_terminal_only(tmp_path):
    bar = b"100%"
    assert bar in _build(tmp_path, "b", {}, tty=True)
    assert bar not in _build(tmp_path, "c", {"TQDM_DISABLE": "1"}, tty=True)
    piped = _build(tmp_path, "d", {}, tty=False)
    assert b"\r" not in piped and b"%|" not in piped  # no bar off a terminal (lines instead: below)
    assert bar not in _build(tmp_path, "e", {}, tty=True, quiet=True)


def test_env_switch(monkeypatch):
    for value, want in (("1", True), ("true", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert env_disabled() is want
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress(range(3)).disable is True
    monkeypatch.delenv("TQDM_DISABLE")
    assert progress(range(3), quiet=True).disable is True


def test_both_commands_take_quiet_verbose_before_or_after_the_subcommand_and_version():
    from broden_builder.cli import build_parser as broden_parser
    from dissect.cli import build_parser as dissect_parser

    for parser, argv in ((broden_parser(), ["validate", "S"]), (dissect_parser(), ["report", "O"])):
        plain = parser.parse_args(argv)
        assert plain.quiet is False and plain.verbose is False
        for flags in (["-q", "-v"], ["--quiet", "--verbose"]):
            before = parser.parse_args(flags + argv)
            after = parser.parse_args(argv + flags)
            assert before.quiet and before.verbose and after.quiet and after.verbose, (argv, flags)
    for cmd in ("broden_builder.cli", "dissect.cli"):
        run = subprocess.run([sys.executable, "-m", cmd, "--version"], capture_output=True, text=True)
        assert run.returncode == 0 and "0.1.0" in run.stdout, run


# ---------------------------------------------------------------- off a terminal: lines (issue 24, item 1)
class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_log_lines_at_start_every_5_percent_or_30_s_and_at_the_end():
    """Hand-computed lines: 100 batches of 10 images; 5% is 5 batches, at most one line per 5 s,
    and a line after 30 s whatever the progress."""
    from broden_builder.progress import LogProgress

    clock, events = _Clock(), []
    bar = LogProgress(total=100, desc="pass 1/2", unit="batch", per_unit=10, sink=events.append, clock=clock)
    for _ in range(5):  # 5 batches in 1 s each: 5% done at t=5, 5 s since the start line -> a line
        clock.t += 1
        bar.update(1)
    clock.t += 1  # one more batch at t=6: only 1% more -> no line
    bar.update(1)
    clock.t = 40  # a slow batch: 34 s since the last line -> a line although only 2% more
    bar.update(1)
    clock.t = 41  # 5 more batches at t=41 (1 s after the last line): below MIN_INTERVAL -> no line
    bar.update(5)
    clock.t = 50
    bar.update(88)
    bar.close()
    bar.close()  # once
    texts = [e.text for e in events]
    assert texts == [
        "pass 1/2: start, 100 batches",
        "pass 1/2: 5/100 batches (5%), 1 batch/s, 10 images/s, elapsed 5s, ETA 1m35s",
        "pass 1/2: 7/100 batches (7%), 0.175 batch/s, 1.75 images/s, elapsed 40s, ETA 8m51s",  # 93 / 0.175 = 531 s
        "pass 1/2: 100/100 batches (100%), 2 batch/s, 20 images/s, elapsed 50s, done",
    ]
    assert [e.stage for e in events] == ["start", "update", "update", "end"]
    assert events[1].eta == pytest.approx(95.0) and events[1].images_per_s == pytest.approx(10.0)


def test_progress_picks_lines_off_a_terminal_and_the_sink(monkeypatch, capsys):
    import logging

    from broden_builder.progress import LogProgress, note, progress_to

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    bar = progress(range(3), desc="work", unit="img")  # pytest's stderr is not a terminal
    assert isinstance(bar, LogProgress) and list(bar) == [0, 1, 2]
    note("resuming from X")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "work: start, 3 img" and err[1].startswith("work: 3/3 img (100%)") and err[2] == "resuming from X"
    got = []
    with progress_to(got.append):
        list(progress(range(2), desc="a"))
        note("checkpoint")
    assert [g.stage if not isinstance(g, str) else g for g in got] == ["start", "end", "checkpoint"]
    assert capsys.readouterr().err == ""  # a sink replaces the stderr lines
    log = logging.getLogger("test-progress-sink")
    records = []
    log.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
    log.setLevel(logging.INFO)
    with progress_to(log):
        list(progress(range(1), desc="b"))
    assert records == ["b: start, 1 it", records[1]] and records[1].startswith("b: 1/1 it (100%)")
    with pytest.raises(TypeError):
        with progress_to(42):
            pass
    assert progress(range(3), quiet=True).disable is True and note("x", quiet=True) is None
    assert capsys.readouterr().err == ""


def test_piped_broden_build_logs_lines(tmp_path):
    piped = _build(tmp_path, "p", {}, tty=False).decode()
    assert "\r" not in piped
    lines = [l for l in piped.splitlines() if ": start, " in l or l.endswith(", done")]
    assert any(": start, 8 img" in l for l in lines) and any("8/8 img (100%)" in l for l in lines)


def test_dissect_api_progress_callback_and_cli_resume_lines(synthetic_store, tmp_path):
    """The Python API's progress= gets every pass's lines and the checkpoint notes; a killed CLI run,
    restarted off a terminal, says it resumes at the default level (no -v)."""
    from dissect import Dissection
    from dissect_helpers import TINY_MODEL_SOURCE

    ns: dict = {}
    exec(compile(TINY_MODEL_SOURCE, "tiny.py", "exec"), ns)
    got = []
    Dissection(ns["tiny"](), "features", synthetic_store, batch_size=20, workers=0, device="cpu",
               checkpoint_every=1, progress=got.append).run(out=tmp_path / "api", report=False)
    events = [g for g in got if not isinstance(g, str)]
    notes = [g for g in got if isinstance(g, str)]
    assert [(e.desc, e.stage) for e in events if e.stage != "update"] == [
        ("pass 1/2 (activations)", "start"), ("pass 1/2 (activations)", "end"),
        ("pass 2/2 (tally)", "start"), ("pass 2/2 (tally)", "end")]
    assert events[1].n == 3 and events[1].total == 3  # 60 images in batches of 20
    assert any(n.startswith("checkpoint: pass 1, 1 batch done") for n in notes)
    (tmp_path / "tiny.py").write_text(TINY_MODEL_SOURCE)
    cmd = [sys.executable, "-m", "dissect", "run", "--store", str(synthetic_store), "--model", "tiny.py:tiny",
           "--layer", "features", "--out", "cli", "--batch-size", "20", "--workers", "0", "--device", "cpu",
           "--checkpoint-every", "1", "--no-report"]
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    first = subprocess.run(cmd, env=dict(env, DISSECT_FAULT_AFTER="1:2"), cwd=tmp_path, capture_output=True,
                           text=True)
    assert first.returncode == 75, first.stderr
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming from " in again.stderr and "(pass 1, batch 2 of 3)" in again.stderr
    assert "pass 1/2 (activations): start, 3 batches, from 2" in again.stderr
    assert "pass 2/2 (tally): 3/3 batches (100%)" in again.stderr


def test_counts_read_in_the_singular_for_one():
    from broden_builder.progress import LogProgress
    from broden_builder.words import count

    assert [count(1, "thread"), count(2, "thread"), count(0, "batch"), count(1, "batch"), count(3, "class")] == \
        ["1 thread", "2 threads", "0 batches", "1 batch", "3 classes"]
    got = []
    LogProgress(total=1, desc="d", unit="batch", sink=got.append).close()
    assert got[0].text == "d: start, 1 batch" and got[1].text.startswith("d: 0/1 batch (0%)")


def test_unknown_total_and_every_start_has_an_end(tmp_path, synthetic_store):
    """An unknown total is not printed as "?"; the report's line per layer ends with "done" (it
    stopped at its start line when the strips were zipped with the unit numbers)."""
    from broden_builder.progress import LogProgress
    from dissect.cli import main

    events = []
    bar = LogProgress(total=None, desc="null (20 permutations)", unit="group", sink=events.append, clock=lambda: 0.0)
    bar.update(2)
    bar.close()
    assert events[0].text == "null (20 permutations): start" and "?" not in " ".join(e.text for e in events)
    n = 60
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((n, 3, 2, 2), dtype=np.float32))
    got = []
    from broden_builder.progress import progress_to

    with progress_to(got.append):
        assert main(["score", "--store", str(synthetic_store), "--activations", str(tmp_path / "a.npy"),
                     "--out", str(tmp_path / "o"), "--workers", "0"]) == 0
    report = [e.text for e in got if not isinstance(e, str) and e.desc.startswith("report ")]
    assert report and report[0].endswith("start, 3 units") and report[-1].endswith(", done"), report
