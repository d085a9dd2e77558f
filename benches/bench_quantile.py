"""Exact top-quantile (TopQuantile) at ResNet-50 layer1 shape (256 x 56 x 56, float16 cache values),
timed over N images and extrapolated to the 63,305 images of broden1_224.

    python benches/bench_quantile.py [--images 2000] [--old-images 400] [--threads 1]

The survivors of the cutoff filter depend only on (images seen) / N, and every compaction costs
O(keep) with keep proportional to N, so the stream method's total time is linear in N: the
63,305-image figure is time(N) x 63,305 / N. Held memory at 63,305 images is U x (keep + slack)
x 2 bytes (computed, and measured at N). The old method (topk over kept values + each batch,
float32, int64 indices; git 5cfe295) is timed at --old-images with total_count set for that N;
its per-batch cost grows with N (it re-sorts the kept values every batch).
The histogram method (chosen when the kept values exceed the memory budget) is timed too.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dissect.stats.quantile import TopQuantile  # noqa: E402

U, H, BS, Q, FULL = 256, 56, 32, 0.005, 63305


def batches(n, dtype=torch.float16):
    for b in range(0, n, BS):
        g = torch.Generator().manual_seed(b)
        yield torch.relu(torch.randn(min(BS, n - b), U, H, H, generator=g)).half().to(dtype)  # cache values


def run(tq, n, dtype=torch.float16):
    spent = cpu = 0.0
    for x in batches(n, dtype):
        t, c = time.perf_counter(), time.thread_time()  # torch runs single-threaded here (--threads 1)
        tq.add(x)
        spent += time.perf_counter() - t
        cpu += time.thread_time() - c
    run.held = tq.held_bytes() if hasattr(tq, "held_bytes") else 0
    t, c = time.perf_counter(), time.thread_time()
    thr = tq.thresholds()
    run.cpu = cpu + time.thread_time() - c
    return spent + time.perf_counter() - t, thr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--old-images", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}, "
          f"torch {torch.__version__}, threads {a.threads}")
    n = a.images
    tq = TopQuantile(U, Q, n * H * H)
    t, thr = run(tq, n)
    held = run.held
    keep63 = FULL * H * H - int(np.floor((FULL * H * H - 1) * (1 - Q)))
    cap63 = keep63 + max(keep63 // 4, 4096)
    print(f"stream method: {n} images in {t:.2f} s wall, {run.cpu:.2f} s CPU ({n / run.cpu:.0f} images/s per core); held {held / 2**20:.1f} MiB; "
          f"extrapolated to {FULL}: {run.cpu * FULL / n / 60:.1f} min CPU, held {U * cap63 * 2 / 2**20:.0f} MiB")
    hq = TopQuantile(U, Q, n * H * H, memory_budget=1)
    th, thr_h = run(hq, n)
    th = run.cpu
    assert torch.equal(thr, thr_h), "histogram and stream methods disagree"
    print(f"histogram method (float16: one pass): {n} images in {th:.2f} s CPU ({n / th:.0f} images/s per core); "
          f"held {run.held / 2**20:.1f} MiB (independent of N); extrapolated to {FULL}: {th * FULL / n / 60:.1f} min")
    # the old method, for comparison (float32 values as the old runner fed them)
    spec = importlib.util.spec_from_file_location("old_quantile", Path("/tmp/i16/old_quantile.py"))
    if spec and Path(spec.origin).is_file() and a.old_images:
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        m = a.old_images
        oq = old.TopQuantile(U, Q, m * H * H)
        _, thr_o = run(oq, m, torch.float32)
        to = run.cpu
        nq = TopQuantile(U, Q, m * H * H)
        _, thr_n = run(nq, m)
        tn = run.cpu
        assert torch.equal(thr_o, thr_n), "old and new thresholds disagree"
        print(f"old method at {m} images: {to:.2f} s vs new {tn:.2f} s CPU ({to / tn:.1f}x), thresholds identical")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
