"""Run ``dissect ARGS`` in this process, pausing right after it takes the ``--out`` lock.

Used by tests/test_reliability_locked.py to hold a real command inside its lock while a second real
process tries the same folder: on taking the lock (the first call of results.sweep_partial_results)
it writes its PID to $PAUSE_READY and waits until the file $PAUSE_GO exists.
"""
import os
import sys
import time

import dissect.results as results

_sweep = results.sweep_partial_results


def _paused(out):
    with open(os.environ["PAUSE_READY"], "w") as f:
        f.write(str(os.getpid()))
    deadline = time.time() + 300
    while not os.path.exists(os.environ["PAUSE_GO"]) and time.time() < deadline:
        time.sleep(0.05)
    return _sweep(out)


results.sweep_partial_results = _paused

from dissect.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:], own_process=True))
