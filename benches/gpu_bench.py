"""GPU end-to-end benchmark: dissect resnet18 layer4 (random weights) over a synthetic store.

Self-contained, for one GPU + 16 CPU cores, finishing well under 9 minutes:

1. calibration: build a 1,000-image synthetic store (224 / 112) and dissect it, timing both;
2. choose the image count: --images (default 63,000), reduced when the projected build + dissect
   time would exceed --budget seconds (default 330) -- the JSON then says so and gives the
   63k projection by linear extrapolation;
3. build the store (--build-workers, default all cores) and dissect it on --device (cuda),
   printing images/second end to end and per stage; numbers go to $OUT/gpu_bench.json
   (or --json).

Smoke test on CPU: ``python benches/gpu_bench.py --images 200 --device cpu --calibrate 100``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def build(out: Path, count: int, workers: int) -> float:
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "bench", "size": 224, "segmentation_size": 112, "min_frequency": 10,
                               "min_coverage": 0.5, "sources": [{"type": "synthetic", "count": count, "seed": 0}]})
    t = time.perf_counter()
    build_store(recipe, out, workers=workers, quiet=True)
    return time.perf_counter() - t


def dissect(store: Path, out: Path, device: str, batch: int, workers: int) -> dict:
    import torch

    from dissect.capture._models import load_model
    from dissect import DissectConfig, dissect_model

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cfg = DissectConfig(device=device, batch_size=batch, workers=workers, quiet=True, checkpoint_every=0)
    t = time.perf_counter()
    res = dissect_model(load_model("resnet18", "none"), ["layer4"], store, cfg, out=out)["layer4"]
    wall = time.perf_counter() - t
    n = res.store["images"]
    tm = res.timings
    out_d = {"images": n, "wall_s": wall, "images_per_s": n / wall, "timings_s": tm,
             "pass1_images_per_s": n / tm["pass1_activations"], "pass2_images_per_s": n / tm["pass2_tally"],
             "summary": res.summary_line()}
    if device.startswith("cuda"):
        out_d["gpu_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out_d["gpu"] = torch.cuda.get_device_name()
    return out_d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=63000)
    ap.add_argument("--calibrate", type=int, default=1000, help="images of the calibration store")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--build-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--budget", type=float, default=330.0, help="seconds for the main build + dissection")
    ap.add_argument("--workdir", default=None, help="scratch folder (default a temp dir, removed at the end)")
    ap.add_argument("--json", default=None, help="output JSON (default $OUT/gpu_bench.json, else ./gpu_bench.json)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    t_all = time.perf_counter()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    report: dict = {"device": args.device, "batch_size": args.batch_size, "workers": args.workers,
                    "build_workers": args.build_workers, "cpu_count": os.cpu_count()}
    try:
        cal = min(args.calibrate, args.images)
        bt = build(work / "cal_store", cal, args.build_workers)
        print(f"calibration: built {cal} images in {bt:.1f} s ({cal / bt:.0f} images/s)", flush=True)
        dc = dissect(work / "cal_store", work / "cal_out", args.device, args.batch_size, args.workers)
        print(f"calibration: dissected {cal} images in {dc['wall_s']:.1f} s ({dc['images_per_s']:.0f} images/s)", flush=True)
        report["calibration"] = {"images": cal, "build_s": bt, "dissect": dc}
        per_img = bt / cal + dc["wall_s"] / cal  # pessimistic: includes fixed start-up costs
        n = args.images
        if n * per_img > args.budget:
            n = max(cal, int(args.budget / per_img) // 1000 * 1000)
            print(f"projected {args.images * per_img:.0f} s for {args.images} images exceeds the budget "
                  f"{args.budget:.0f} s: using {n} images and extrapolating", flush=True)
        report["requested_images"] = args.images
        report["images"] = n
        if n > cal:
            bt = build(work / "store", n, args.build_workers)
            print(f"built {n} images in {bt:.1f} s ({n / bt:.0f} images/s)", flush=True)
            d = dissect(work / "store", work / "out", args.device, args.batch_size, args.workers)
        else:
            d = dc
        report["build_s"] = bt
        report["build_images_per_s"] = n / bt
        report["dissect"] = d
        print(d["summary"])
        print(f"dissect end to end: {d['images']} images in {d['wall_s']:.1f} s = {d['images_per_s']:.0f} images/s "
              f"(pass 1 model+cache {d['pass1_images_per_s']:.0f}/s, pass 2 tally {d['pass2_images_per_s']:.0f}/s)")
        if n < args.images:
            report["extrapolated_63k_dissect_s"] = args.images / d["images_per_s"]
            report["extrapolated_63k_build_s"] = args.images / (n / bt)
        report["total_s"] = time.perf_counter() - t_all
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    dest = Path(args.json) if args.json else Path(os.environ.get("OUT", ".")) / "gpu_bench.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
