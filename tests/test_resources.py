"""CPU parallelism defaults (dissect.resources): cgroup quota parsing and the chosen split."""
from __future__ import annotations

import os

from dissect import resources


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
    assert (p.threads, p.workers, p.forward_threads, p.source) == (1, 1, 1, "default")
    p = resources.choose(cpus=1)
    assert (p.threads, p.workers, p.forward_threads) == (1, 0, 1)
    p = resources.choose(cpus=16)
    assert (p.threads, p.workers, p.forward_threads) == (1, 4, 12)
    p = resources.choose(threads=3, cpus=16)
    assert (p.threads, p.forward_threads, p.source) == (3, 3, "overridden")
    assert resources.choose(workers=0, cpus=8).workers == 0
    assert set(p.as_dict()) == {"cpus", "threads", "forward_threads", "workers", "source"}
