"""CPU parallelism defaults (dissect.engine._resources): cgroup quota parsing and the chosen split."""
from __future__ import annotations

import os

from dissect.engine import _resources as resources


def test_cgroup_v2_and_v1_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert resources._cgroup_limit(tmp_path) == 2  # 1.5 CPUs -> 2 (rounded up)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert resources._cgroup_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert resources._cgroup_limit(v1) == 3
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert resources._cgroup_limit(v1) is None
    assert resources._cgroup_limit(tmp_path / "missing") is None


def test_available_cpus_respects_affinity_and_quota(tmp_path):
    mine = len(os.sched_getaffinity(0))
    assert resources.available_cpus(tmp_path / "missing") == mine
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert resources.available_cpus(tmp_path) == 1


def test_choose_defaults_and_overrides():
    p = resources.choose(cpus=2)
    assert (p.threads, p.workers, p.forward_threads, p.tally_workers, p.source) == (1, 1, 1, 2, "default")
    p = resources.choose(cpus=1)  # one CPU: everything in the main process
    assert (p.threads, p.workers, p.forward_threads, p.tally_workers) == (1, 0, 1, 0)
    p = resources.choose(cpus=16)
    assert (p.threads, p.workers, p.forward_threads, p.tally_workers) == (1, 4, 12, 8)
    assert resources.choose(workers=3, cpus=16).tally_workers == 3  # --workers sets both passes
    p = resources.choose(threads=3, cpus=16)
    assert (p.threads, p.forward_threads, p.source) == (3, 3, "overridden")
    assert resources.choose(workers=0, cpus=8).workers == 0
    assert set(p.as_dict()) == {"cpus", "threads", "forward_threads", "workers", "tally_workers", "source"}


def test_parallelism_recorded_and_threads_override(synthetic_store, tmp_path):
    """result.json records the split used; --threads overrides the single-threaded default."""
    import json

    import numpy as np
    import torch

    from broden_builder import BrodenStore
    from dissect.cli import main

    n = len(BrodenStore(synthetic_store))
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((n, 3, 2, 2)).astype(np.float32))
    before = torch.get_num_threads()
    try:
        for extra, threads in (([], 1), (["--threads", "2"], 2)):
            out = tmp_path / f"o{threads}"
            assert main(["score", "--store", str(synthetic_store), "--activations", str(tmp_path / "a.npy"),
                         "--out", str(out), "--name", "a", "--quiet", "--no-report", "--workers", "0"] + extra) == 0
            par = json.loads((out / "a" / "result.json").read_text())["settings"]["parallelism"]
            assert par["threads"] == threads and par["workers"] == 0
            assert par["cpus"] == resources.available_cpus()
            assert par["forward_threads"] >= 1 and par["source"] in ("default", "overridden")
    finally:
        torch.set_num_threads(before)


def test_histogram_quantile_through_the_runner(synthetic_store, tmp_path):
    """A memory budget too small for the kept values: the runner's extra pass (rescan) gives thresholds
    equal to np.quantile and to the stream method, float32 values."""
    import numpy as np

    from broden_builder import BrodenStore
    from dissect import DissectConfig
    from dissect.engine._runner import score_activations

    n = len(BrodenStore(synthetic_store))
    a = np.random.default_rng(1).standard_normal((n, 4, 3, 3)).astype(np.float32)
    a[:, 1] = np.maximum(a[:, 1], 0)
    base = dict(workers=0, quiet=True, batch_size=7, device="cpu", quantile=0.05)
    small = score_activations(a, synthetic_store, DissectConfig(quantile_memory=1, **base))
    big = score_activations(a, synthetic_store, DissectConfig(**base))
    want = np.array([np.quantile(a[:, u].ravel(), 0.95) for u in range(4)], np.float32)
    np.testing.assert_array_equal(small.thresholds, want)
    np.testing.assert_array_equal(big.thresholds, want)
    np.testing.assert_array_equal(small.iou, big.iou)


def test_histogram_quantile_extra_pass_sees_the_rotated_values(synthetic_store, tmp_path):
    """--rotate with the histogram method: the extra pass must rescan the rotated values, so the thresholds
    equal np.quantile of the rotated activations (rotation computed here in float64 from a QR of the
    seeded Gaussian, independent of the engine) and those of the stream method."""
    import numpy as np

    from broden_builder import BrodenStore
    from dissect import DissectConfig
    from dissect.engine._basis import random_orthogonal
    from dissect.engine._runner import score_activations

    n = len(BrodenStore(synthetic_store))
    a = np.random.default_rng(2).standard_normal((n, 4, 3, 3)).astype(np.float32)
    a[:, 0] += 3.0  # rotation mixes a shifted unit into the others: unrotated thresholds would differ
    base = dict(workers=0, quiet=True, batch_size=5, device="cpu", quantile=0.05, rotate=7)
    small = score_activations(a, synthetic_store, DissectConfig(quantile_memory=1, **base))
    big = score_activations(a, synthetic_store, DissectConfig(**base))
    m = random_orthogonal(4, 7)
    rot = np.einsum("ij,njk->nik", m, a.reshape(n, 4, -1).astype(np.float64))
    want = np.array([np.quantile(rot[:, u].ravel(), 0.95) for u in range(4)])
    np.testing.assert_allclose(small.thresholds, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(small.thresholds, big.thresholds)


def test_cgroup_quota_of_this_process_own_cgroup(tmp_path):
    """The quota is read where /proc/self/cgroup says this process is (and from its ancestors: the
    smallest wins), not only at the hierarchy's root, where systemd, batch schedulers and docker
    without a cgroup namespace never put it. Oracle: the quotas written here by hand."""
    proc = tmp_path / "cgroup"
    v2 = tmp_path / "v2"
    (v2 / "system.slice" / "job.scope").mkdir(parents=True)
    (v2 / "system.slice" / "cpu.max").write_text("max 100000\n")
    (v2 / "system.slice" / "job.scope" / "cpu.max").write_text("50000 100000\n")  # half a CPU
    proc.write_text("0::/system.slice/job.scope\n")
    assert resources._cgroup_limit(v2, proc) == 1
    (v2 / "system.slice" / "job.scope" / "cpu.max").write_text("max 100000\n")
    (v2 / "system.slice" / "cpu.max").write_text("300000 100000\n")  # the parent's quota limits the child
    assert resources._cgroup_limit(v2, proc) == 3
    proc.write_text("0::/docker/0123abcd\n")  # a path of the host's tree: only the mount's own quota counts
    (v2 / "cpu.max").write_text("200000 100000\n")
    assert resources._cgroup_limit(v2, proc) == 2
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "batch" / "42").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000")
    (v1 / "cpu,cpuacct" / "batch" / "42" / "cpu.cfs_quota_us").write_text("150000")
    (v1 / "cpu,cpuacct" / "batch" / "42" / "cpu.cfs_period_us").write_text("100000")
    proc.write_text("4:memory:/batch/42\n3:cpu,cpuacct:/batch/42\n2:cpuset:/\n")
    assert resources._cgroup_limit(v1, proc) == 2
    proc.write_text("3:cpu,cpuacct:/\n")
    assert resources._cgroup_limit(v1, proc) is None
    assert resources._cgroup_limit(v1, tmp_path / "no-proc-file") is None
