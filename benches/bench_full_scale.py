"""Broden at its real size on this machine: build a 63,305-image store at 224/112 whose label
density follows Broden's facts (docs/format.md), stream ResNet-18-layer4-shaped activations to disk,
then time `dissect score` as a whole process with default settings (twice: the second run reads the
label cache the first one wrote).

    python benches/bench_full_scale.py [--workdir /tmp/full_scale] [--images 63305] [--workers 2]
                                       [--json out.json] [--skip-build] [--run-images 500,1000]

The store (written with the store writer, the builder's own row writer and tables):
- 63,305 rows in Broden's source proportions: ADE20K 22,210 (object plane covering ~95% of the pixels,
  two part levels, one scene), Pascal 10,103 (object plane covering every pixel, one part layer),
  OpenSurfaces 25,352 (material plane covering ~60%), DTD 5,640 (one to three textures); a colour
  plane on every image (11 colours, every pixel);
- label vocabularies of the paper's sizes: object 584, part 234, material 32, scene 468, texture 47,
  colour 11 (1,376 labels), each drawn from a Zipf law (few frequent labels, a long tail), regions
  as random rectangles painted in order (later over earlier), so planes hold 5-15 labels each.
The activations: 512 units x 7 x 7, float16, written to a .npy in chunks (never held whole in memory):
each unit responds to one label (its 7 x 7 coverage) plus noise, ReLU: a detector-like layer, so the
tally's hot paths run as on a trained network. (A real ResNet-18 forward over 63k images costs ~20 min
of CPU here; `--run-images 500,1000` measures `dissect run`'s end-to-end rate on small stores made by the
same generator and extrapolates to 63,305 images instead.)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCES = (("ade20k", 22210), ("pascal", 10103), ("opensurfaces", 25352), ("dtd", 5640))
VOCAB = {"color": 11, "object": 584, "part": 234, "material": 32, "scene": 468, "texture": 47}
CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
SIZE, SEG = 224, 112
BRODEN_ROWS = 63305  # rows of the released broden1_224


def _numbers() -> dict:
    """category -> array of global label numbers (colour first, as the original numbering tends to)."""
    out, n = {}, 1
    for cat in CATEGORIES:
        out[cat] = np.arange(n, n + VOCAB[cat])
        n += VOCAB[cat]
    return out


def _zipf(rng, n: int, size: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** 1.1
    return rng.choice(n, size=size, p=w / w.sum())


def _paint(rng, labels: np.ndarray, count: int, cover: float) -> np.ndarray:
    """A SEG x SEG plane: ``count`` random rectangles of ``labels`` painted in order; roughly ``cover`` of it set."""
    plane = np.zeros((SEG, SEG), np.int32)
    if cover >= 1.0:
        plane[:] = labels[0]
    for lab in labels[:count]:
        h, w = (rng.uniform(0.15, 0.7, 2) * SEG * min(1.0, cover + 0.3)).astype(int) + 2
        y, x = rng.integers(0, SEG - h + 1), rng.integers(0, SEG - w + 1)
        plane[y:y + h, x:x + w] = lab
    return plane


def _row(i: int, source: str, numbers: dict):
    rng = np.random.default_rng(i)
    pick = lambda cat, k: numbers[cat][_zipf(rng, VOCAB[cat], k)]  # noqa: E731
    pixel = {"color": [_paint(rng, pick("color", 8), 8, 1.0)]}
    level: dict = {}
    stacked = ()
    if source == "ade20k":
        pixel["object"] = [_paint(rng, pick("object", 10), 10, 0.95)]
        pixel["part"] = [_paint(rng, pick("part", 4), 4, 0.15), _paint(rng, pick("part", 2), 2, 0.05)]
        level["scene"] = [int(pick("scene", 1)[0])]
        stacked = ("part",)
    elif source == "pascal":
        pixel["object"] = [_paint(rng, pick("object", 6), 6, 1.0)]
        pixel["part"] = [_paint(rng, pick("part", 4), 4, 0.15)]
    elif source == "opensurfaces":
        pixel["material"] = [_paint(rng, pick("material", 4), 4, 0.6)]
    else:
        level["texture"] = sorted({int(t) for t in pick("texture", int(rng.integers(1, 4)))})
    # an image that shows its regions (so JPEG sizes are realistic): colour of the colour plane + noise
    base = pixel["color"][0]
    rgb = ((base[:, :, None] * np.array([37, 91, 53])) % 255).astype(np.uint8)
    rgb = np.kron(rgb, np.ones((SIZE // SEG, SIZE // SEG, 1), np.uint8))
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
    return pixel, level, stacked, rgb


def _write_rows(args) -> int:
    root, rows = args
    from broden_builder.store.format import split_for
    from broden_builder.store.writer import StoreWriter

    numbers = _numbers()
    w = StoreWriter(root)
    for i, source in rows:
        image = f"{source}/{source}_{i:06d}.jpg"
        if w.has_row(image):
            continue
        pixel, level, stacked, rgb = _row(i, source, numbers)
        w.write_row(image, split_for(image), (SIZE, SIZE), (SEG, SEG), pixel, level, rgb=rgb, stacked=stacked)
    return len(rows)


def build_store(root: Path, n: int, workers: int) -> float:
    from multiprocessing import get_context

    from broden_builder.store.writer import LabelSpec, StoreWriter

    total = sum(c for _, c in SOURCES)
    rows, i = [], 0
    for source, count in SOURCES:
        k = round(count * n / total)
        rows += [(i + j, source) for j in range(k)]
        i += k
    t = time.perf_counter()
    chunks = [(root, rows[s:s + 500]) for s in range(0, len(rows), 500)]
    StoreWriter(root)  # creates the folders once
    with get_context("spawn").Pool(workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(_write_rows, chunks), 1):
            if done % 10 == 0:
                print(f"  store: {done * 500:,} / {len(rows):,} rows ({time.perf_counter() - t:.0f} s)", flush=True)
    numbers = _numbers()
    labels = [LabelSpec(int(num), f"{cat}{j}" + ("-c" if cat == "color" else "-s" if cat == "scene" else ""), (), cat)
              for cat in CATEGORIES for j, num in enumerate(numbers[cat])]
    StoreWriter(root).finalize(labels, {"name": "full-scale bench", "size": SIZE, "segmentation_size": SEG},
                               "bench_full_scale.py: a Broden-sized store with Broden-like label density\n")
    return time.perf_counter() - t


def write_activations(store: Path, path: Path, chunk: int = 1000) -> float:
    """[N, 512, 7, 7] float16 .npy written chunk by chunk through a memory map (bounded memory)."""
    from numpy.lib.format import open_memmap

    from broden_builder import BrodenStore

    t = time.perf_counter()
    s = BrodenStore(store)
    n = len(s)
    rng = np.random.default_rng(0)
    cats = ("object", "part", "material", "color")
    numbers = _numbers()
    by_label: dict = {}  # global label number -> units that respond to it
    for u in range(512):
        cat = cats[u % 4]
        by_label.setdefault(int(numbers[cat][int(rng.integers(0, min(40, VOCAB[cat])))]), []).append(u)
    out = open_memmap(path, mode="w+", dtype=np.float16, shape=(n, 512, 7, 7))
    cell = SEG // 7
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = np.abs(rng.standard_normal((stop - start, 512, 7, 7), dtype=np.float32)) * 0.3
        for r in range(start, stop):
            for cat in cats:
                for plane in s.pixel_layers(r, cat):
                    grid = plane[:7 * cell, :7 * cell]
                    for lab in np.unique(grid):
                        units = by_label.get(int(lab))
                        if units:
                            cov = (grid == lab).reshape(7, cell, 7, cell).mean(axis=(1, 3))
                            block[r - start, units] += 2.0 * cov
        out[start:stop] = block.astype(np.float16)
        out.flush()
        print(f"  activations: {stop:,} / {n:,}", flush=True)
    del out
    return time.perf_counter() - t


def timed(cmd, env=None) -> dict:
    """bench_vs_lite's whole-process timing, rounded for the record."""
    from bench_vs_lite import timed as timed_process

    r = timed_process(cmd, env)
    return {"wall_s": round(r["wall_s"], 1), "cpu_s": round(r["cpu_s"], 1), "rss_mib": round(r["rss_mib"]),
            "load_at_start": round(r["load"], 2), "load_at_end": round(r["load_at_end"], 2)}


def run_rate(work: Path, sizes, total: int, workers: int, env: dict) -> dict:
    """`dissect run` end to end with a real architecture (torchvision resnet18, random init: no weights
    can be downloaded here; the forward costs the same) on stores of ``sizes`` images made by the same
    generator, as whole processes with default settings; a line fitted through (images, wall s) and
    (images, CPU s) extrapolates to ``total`` images. Stated as an extrapolation, not a measurement."""
    out: dict = {"model": "resnet18 --weights none --layer layer4", "points": []}
    for n in sizes:
        store = work / f"run_store{n}"
        if not (store / "index.csv").is_file():
            shutil.rmtree(store, ignore_errors=True)
            build_store(store, n, workers)
        dest = work / f"run_out{n}"
        shutil.rmtree(dest, ignore_errors=True)
        cmd = [sys.executable, "-m", "dissect.cli", "run", "--store", str(store), "--model", "resnet18",
               "--weights", "none", "--layer", "layer4", "--out", str(dest), "--quiet", "--no-report"]
        point = {"images": n} | timed(cmd, env)
        out["points"].append(point)
        print("run", point, flush=True)
    if len(sizes) >= 2:
        x = np.array([p["images"] for p in out["points"]], float)
        for key in ("wall_s", "cpu_s"):
            slope, fixed = np.polyfit(x, [p[key] for p in out["points"]], 1)
            out[f"{key}_per_image_ms"] = round(slope * 1000, 2)
            out[f"{key}_fixed"] = round(fixed, 1)
            out[f"{key}_extrapolated_to_{total}"] = round(fixed + slope * total, 0)
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/full_scale"))
    ap.add_argument("--images", type=int, default=BRODEN_ROWS)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-build", action="store_true", help="reuse the store and activations under --workdir")
    ap.add_argument("--build-only", action="store_true", help="build the store and activations, time nothing else")
    ap.add_argument("--run-images", default="", metavar="N,N",
                    help="also time `dissect run` (resnet18 layer4, random init) on stores of these sizes and "
                         "extrapolate to Broden's 63,305 images (e.g. 500,1000)")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    work = a.workdir
    store, acts = work / "store", work / "acts.npy"
    res: dict = {"machine": f"{platform.node()} {os.cpu_count()} CPUs", "images": a.images}
    if not a.skip_build:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        res["build_s"] = round(build_store(store, a.images, a.workers), 1)
        res["activations_s"] = round(write_activations(store, acts), 1)
    res["store_bytes"] = du(store)
    if a.build_only:
        print(json.dumps(res, indent=2))
        (work / "build.json").write_text(json.dumps(res, indent=2) + "\n")
        return 0
    res["activations_bytes"] = acts.stat().st_size
    env = dict(os.environ, PYTHONPATH=str(REPO))
    shutil.rmtree(store / ".cache" / "labels", ignore_errors=True)  # the first run decodes every PNG (and writes the cache)
    for run in ("first", "second"):
        out = work / f"out_{run}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "dissect.cli", "score", "--store", str(store), "--activations", str(acts),
               "--out", str(out), "--quiet", "--no-report"]
        res[f"score_{run}"] = timed(cmd, env)
        print(run, res[f"score_{run}"], flush=True)
    a1, a2 = (np.load(work / f"out_{r}" / "acts" / "iou.npy") for r in ("first", "second"))
    res["second_equals_first"] = bool(np.array_equal(a1, a2))
    if a.run_images:
        sizes = [int(n) for n in a.run_images.split(",")]
        res["run"] = run_rate(work, sizes, BRODEN_ROWS, a.workers, env)
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
