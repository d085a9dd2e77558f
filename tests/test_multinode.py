"""Two torchrun "nodes" (c10d rendezvous on 127.0.0.1, one process each) give the result of one process,
and the --out lock holds for the whole multi-node job: a second job on the same --out is refused on every
node (it neither hangs in a collective nor writes)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_dissect_cli import RUN_ARGS, _same_results, run1, store40  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(out: Path, store: Path, port: int) -> list:
    """Start two torchrun launchers, one per node, on one c10d rendezvous; returns the Popen objects."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"job{port}",
           "--max_restarts", "0",
           "-m", "dissect.cli", "run", "--store", str(store), "--out", str(out)] + RUN_ARGS
    return [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]


def _finish(procs, timeout=400) -> list:
    outs = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        outs.append((p.returncode, so, se))
    return outs


@pytest.mark.slow
def test_two_nodes_equal_one_process(run1, store40, tmp_path):  # noqa: F811
    out = tmp_path / "nodes"
    res = _finish(_two_nodes(out, store40, _free_port()))
    for rc, so, se in res:
        assert rc == 0, se[-4000:]
    assert sum(so.count("units are detectors") for _, so, _ in res) == 1  # only global rank 0 prints
    _same_results(run1 / "layer4", out / "layer4")
    doc = json.loads((out / "layer4" / "result.json").read_text())
    assert doc["settings"]["world_size"] == 2 and doc["store"]["images"] == 40


@pytest.mark.slow
def test_second_multinode_job_on_same_out_is_refused(store40, tmp_path):  # noqa: F811
    from broden_builder.store.locking import exclusive

    out = tmp_path / "held"
    with exclusive(out, "first job"):  # the first job holds --out (a lock on a shared folder)
        t0 = time.monotonic()
        res = _finish(_two_nodes(out, store40, _free_port()), timeout=300)
        took = time.monotonic() - t0
    assert all(rc != 0 for rc, _, _ in res), [r[2][-2000:] for r in res]
    # each node's worker says why in one line (torchrun's own launcher then reports the failed child)
    assert all("in use by" in se for _, _, se in res), [r[2][-2000:] for r in res]
    assert all("dissect/" not in line for _, _, se in res for line in se.splitlines() if "File " in line)
    assert not (out / "layer4").exists()
    assert took < 240  # every rank stopped: nobody waited for a collective timeout
