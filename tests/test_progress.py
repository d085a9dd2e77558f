"""Progress bars: shown on a terminal, hidden when redirected, and hidden under TQDM_DISABLE or -q.

Oracle: what reaches the terminal/pipe of a real `broden build` subprocess (a tqdm bar always
writes a carriage return).
"""
from __future__ import annotations

import os
import subprocess
import sys

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
    assert b"\r" not in piped and bar not in piped
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
