"""SAE cost at ResNet-18 layer4 shape (issue 21): 512 units x 7 x 7 -> 8,192 features.

1. ``dissect sae train`` on N images of random non-negative float16 activations [N, 512, 7, 7]
   (the cache's dtype): wall time per epoch and peak resident memory, N = 1,000 and 4,000.
2. ``dissect score`` of the same 1,000-image activations against a store of 1,000 rows (a few
   labels at 14 x 14), units vs ``--sae`` features: wall time and peak memory.

Each measurement is a fresh process (peak RSS from getrusage of the child). Usage:
    python benches/bench_sae.py [--images 1000 4000] [--epochs 1] [--threads N] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list) -> dict:
    """Wall seconds and peak RSS (MiB) of ``cmd`` in a child process (a fresh wrapper each time)."""
    wrapper = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
               "rc = subprocess.run(sys.argv[1:]).returncode; "
               "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
               "'peak_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    if doc["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return doc


def _store(root: Path, n: int) -> Path:
    from broden_builder.store.writer import LabelSpec, StoreWriter

    rng = np.random.default_rng(0)
    w = StoreWriter(root)
    rgb = np.full((28, 28, 3), 127, np.uint8)
    for i in range(n):
        plane = np.zeros((14, 14), np.int32)
        y, x = rng.integers(0, 10, size=2)
        plane[y:y + 4, x:x + 4] = 1 + i % 8
        w.write_row(f"b/{i:05d}.jpg", "train", (28, 28), (14, 14), {"object": [plane]}, {}, rgb=rgb)
    w.finalize([LabelSpec(c + 1, f"thing{c}") for c in range(8)], {"format": "broden"}, "bench\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_sae_"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    threads = ["--threads", str(args.threads)] if args.threads else []
    print(f"machine: {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; work {work}")
    for n in args.images:
        acts = work / f"acts{n}.npy"
        if not acts.exists():
            rng = np.random.default_rng(n)
            np.save(acts, np.maximum(rng.standard_normal((n, 512, 7, 7)), 0).astype(np.float16))
        r = _run([py, "-m", "dissect.cli", "sae", "train", "--activations", str(acts), "--features", "8192", "--k", "32",
                  "--epochs", str(args.epochs), "--out", str(work / f"sae{n}"), "--device", "cpu", "-q", *threads])
        meta = json.loads((work / f"sae{n}" / "sae.json").read_text())
        print(f"train {n} images ({n * 49:,} positions), 512 -> 8192, k 32, {args.epochs} epoch(s): "
              f"{r['seconds']:.1f} s wall ({meta['seconds']:.1f} s in train_sae), peak {r['peak_mib']:.0f} MiB, "
              f"explained variance {meta['explained_variance']:.3f}; load {os.getloadavg()[0]:.1f}")
    n = min(args.images)
    store = work / f"store{n}"
    if not (store / "index.csv").exists():
        _store(store, n)
    base = [py, "-m", "dissect.cli", "score", "--store", str(store), "--activations", str(work / f"acts{n}.npy"),
            "--name", "layer4", "--device", "cpu", "--quiet", "--no-report", *threads]
    for what, extra in (("units", []), ("features", ["--sae", f"layer4={work / f'sae{n}'}"])):
        r = _run(base + ["--out", str(work / f"out_{what}")] + extra)
        print(f"score {n} images, {what}: {r['seconds']:.1f} s wall, peak {r['peak_mib']:.0f} MiB; "
              f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
