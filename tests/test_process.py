"""broden_builder.process: the settings of a process that ends with its command."""
from __future__ import annotations

import gc
import platform
import subprocess
import sys

from broden_builder.cli_errors import run_command
from broden_builder.process import tune_allocator



def test_heap_frozen_only_for_a_process_that_ends_with_the_command():
    """run_command freezes the heap (gc.freeze, a measured 0.5 s off each command's exit) and tunes
    the allocator only when asked, as the installed commands ask; main() called in-process (tests,
    notebooks) does not."""
    gc.unfreeze()
    assert run_command(lambda: 0) == 0 and gc.get_freeze_count() == 0
    try:
        seen = []
        assert run_command(lambda: seen.append(gc.get_freeze_count()) or 3, own_process=True) == 3
        assert seen[0] > 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    for mod in ("dissect.cli", "broden_builder.cli"):
        r = subprocess.run([sys.executable, "-m", mod, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip(), (mod, r.stderr)


def test_allocator_tuned_on_glibc():
    if platform.libc_ver()[0] != "glibc":
        assert tune_allocator() in (True, False)
        return
    assert tune_allocator() is True
