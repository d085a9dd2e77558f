"""CPU parallelism of a dissection: torch intra-op threads and DataLoader workers, chosen together.

Rule (small tensors are single-threaded): the statistics work on small tensors ([B, U, 7, 7] maps, tiles, bincounts),
where torch's intra-op parallel sections cost more than they save and collapse when the cores
are shared (measured: a one-map interpolate took 3.1 ms with two threads on a loaded 2-core
machine against 0.15 ms with one). So the main process runs torch single-threaded and the
images (decoding, labels) are split across DataLoader worker processes, one per remaining core
(at most 4: more workers only add IPC). The CPU count is what this process may actually use:
its affinity mask and, in a container, the cgroup CPU quota (cgroup v2 ``cpu.max`` or v1
``cpu.cfs_quota_us``). Only a model forward on the CPU (dissect run) gets the cores that the
workers leave over, since its large convolutions do amortise threads. ``--threads`` overrides.

Pass 2 counts each batch inside its DataLoader worker (dissect.engine._tally_batches) and the main
process only adds the counts, so pass 2 gets one worker per usable CPU (at most 8), and none on
a single CPU (the IPC would only add cost). ``--workers N`` sets both passes' worker count.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

MAX_WORKERS = 4
MAX_TALLY_WORKERS = 8
#: descriptors kept free for the main process (store files, checkpoint, cache, the model's files)
RESERVED_FILES = 96

log = logging.getLogger(__name__)


def _own_cgroups(proc: Path) -> dict:
    """This process's cgroup paths from /proc/self/cgroup (man 7 cgroups): {"v2": "/a/b"} from the
    line ``0::/a/b``, {"v1": "/c"} from the line whose controllers include ``cpu``; {} when unreadable."""
    out: dict = {}
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out["v2"] = parts[2]
        elif "cpu" in parts[1].split(","):
            out["v1"] = parts[2]
    return out


def _levels(mount: Path, rel: str):
    """The folders of a cgroup and of each ancestor up to the mount itself, those that exist (in a
    container without its own cgroup namespace the path names the host's tree: only the mount)."""
    d = mount / rel.strip("/") if rel.strip("/") else mount
    while True:
        if d.is_dir():
            yield d
        if d == mount or mount not in d.parents:
            return
        d = d.parent


def _quota(d: Path, v2: bool) -> Optional[int]:
    """CPUs allowed by one cgroup folder's quota (rounded up), or None when unlimited or unknown."""
    try:
        if v2:  # "max 100000" or "200000 100000"
            text, per = (d / "cpu.max").read_text().split()[:2]
            return None if text == "max" else max(1, math.ceil(int(text) / int(per)))
        quota, period = int((d / "cpu.cfs_quota_us").read_text()), int((d / "cpu.cfs_period_us").read_text())
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def _cgroup_limit(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> Optional[int]:
    """CPUs allowed by the cgroup quotas of this process's own cgroup and its ancestors (the
    smallest: a quota limits everything below it), cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``;
    None when unlimited or unknown. The cgroup is the one /proc/self/cgroup names, not the root
    of the hierarchy (a quota set by systemd, a batch scheduler or docker without a cgroup namespace
    is on a folder below the root)."""
    own = _own_cgroups(proc)
    found = [_quota(d, True) for d in _levels(root, own.get("v2", "/"))]
    for mount in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        found += [_quota(d, False) for d in _levels(mount, own.get("v1", "/"))]
    limits = [n for n in found if n]
    return min(limits) if limits else None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_limit(cgroup_root)
    return max(1, min(n, limit) if limit else n)


@dataclass(frozen=True)
class Parallelism:
    """torch threads for the statistics (main process), for a CPU model forward, DataLoader workers
    of pass 1 (decoding) and of pass 2 on the CPU (decoding and counting)."""

    cpus: int
    threads: int
    forward_threads: int
    workers: int
    tally_workers: int
    source: str  # 'default' or 'overridden'

    def as_dict(self) -> dict:
        return asdict(self)


def choose(threads: Optional[int] = None, workers: Optional[int] = None, cpus: Optional[int] = None) -> Parallelism:
    """The defaults described in the module docstring; explicit ``threads``/``workers`` win."""
    cpus = cpus or available_cpus()
    auto = max(0, min(MAX_WORKERS, cpus - 1))
    w = auto if workers is None else max(0, workers)
    t = 1 if threads is None else max(1, threads)
    fwd = max(1, cpus - w) if threads is None else t
    tw = (min(MAX_TALLY_WORKERS, cpus) if cpus > 1 else 0) if workers is None else max(0, workers)
    return Parallelism(cpus, t, fwd, w, tw, "default" if threads is None and workers is None else "overridden")


def apply_threads(n: int) -> None:
    """Set torch's intra-op threads (interop threads are left alone: they can only be set once)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def workers_for_file_limit(workers: int, tensors_per_item: int, prefetch: int) -> int:
    """``workers``, or fewer (0 at worst) when the open-file limit cannot carry them.

    A DataLoader worker sends each tensor of an item through its own file descriptor (torch's
    ``file_descriptor`` sharing), up to ``prefetch`` items ahead per worker: about
    ``workers * prefetch * tensors_per_item`` descriptors, plus :data:`RESERVED_FILES`. Under a low
    ``ulimit -n`` the workers then fail to send, and torch retries without end (a hang). The soft
    limit is first raised towards the hard one (``resource.setrlimit``); when it is still short,
    the count is lowered, with a warning that names the limit.
    """
    if workers <= 0:
        return workers
    try:
        import resource
    except ImportError:  # not POSIX: no such limit to respect
        return workers
    need = RESERVED_FILES + workers * prefetch * max(1, tensors_per_item)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(hard, need)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return workers
    fit = max(0, (soft - RESERVED_FILES) // (prefetch * max(1, tensors_per_item)))
    log.warning(
        "the open-file limit (ulimit -n %d) carries %d of %d DataLoader workers here (%d tensors per batch); "
        "using %d. Raise the limit to use more",
        soft,
        fit,
        workers,
        tensors_per_item,
        fit,
    )
    return int(fit)
