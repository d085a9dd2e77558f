"""End-to-end benchmark: `dissect run` of resnet18 (random weights) layer4 over synthetic stores.

For each --images N: build (or reuse, under --workdir) a synthetic store of N images at 224 / 112
(build workers --build-workers), then run `dissect run` in a child process and report
images/second, per-stage seconds (from result.json) and the child's peak RSS (ru_maxrss of
the largest process: the main one or a DataLoader worker).

    python benches/bench_end_to_end.py --images 1000 10000 --workdir /tmp/e2e --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ensure_store(path: Path, n: int, workers: int) -> float:
    if (path / "index.csv").is_file():
        return 0.0
    sys.path.insert(0, str(REPO))
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "bench", "size": 224, "segmentation_size": 112,
                               "sources": [{"type": "synthetic", "count": n, "seed": 0}]})
    t = time.perf_counter()
    build_store(recipe, path, workers=workers, quiet=True)
    return time.perf_counter() - t


def run_one(store: Path, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "dissect.cli", "run", "--store", str(store), "--model", "resnet18", "--weights", "none",
           "--layer", "layer4", "--out", str(out), "--device", args.device, "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--quiet"]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(p.stderr)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # MiB (Linux: KiB)
    doc = json.loads((out / "layer4" / "result.json").read_text())
    n = doc["store"]["images"]
    return {"images": n, "wall_s": round(wall, 1), "images_per_s": round(n / wall, 2), "peak_rss_mib": round(rss),
            "timings_s": {k: round(v, 2) for k, v in doc["timings"].items()}, "summary": p.stdout.splitlines()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workdir", default="/tmp/dissect-e2e")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build-workers", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.workdir)
    for n in args.images:
        bt = ensure_store(work / f"store{n}", n, args.build_workers)
        r = run_one(work / f"store{n}", work / f"out{n}", args)
        r["build_s"] = round(bt, 1)
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
