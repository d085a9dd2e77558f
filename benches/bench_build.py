"""Per-image build cost of one worker, on synthetic and on Pascal-format data, and the
estimated time of the full Broden build (63,305 images) on 8 cores.

Usage: python benches/bench_build.py [--images 48] [--size 224] [--cores 8]

Pascal-format data is generated in the real formats (VOC-sized 500x375 JPEGs, a Context
LabelMap .mat and a Pascal-Part anno .mat with 3 objects / 12 parts per image; see
tests/sources/test_pascal.py). Each run is a complete `build_store` (pass 1, unify, pass 2,
tables) with one worker; the per-image cost is total / images. The estimate assumes the
per-image cost of Pascal-format data for every source and linear scaling over cores
(workers are independent processes; the parent only gathers small stats).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sources"))

from broden_builder.build import build_store  # noqa: E402
from broden_builder.recipe import recipe_from_dict  # noqa: E402

FULL_IMAGES = 63305


def make_pascal_bench(root: Path, n: int, seed: int = 0) -> None:
    """n Pascal images at 500x375 with Context and Part annotations (real formats)."""
    from PIL import Image
    from test_pascal import LABELS_TXT, PART2IND, write_context_mat, write_part_mat

    h, w = 375, 500
    rng = np.random.default_rng(seed)
    img_dir = root / "VOCdevkit" / "VOC2010" / "JPEGImages"
    img_dir.mkdir(parents=True)
    (root / "labels.txt").write_text(LABELS_TXT)
    (root / "part2ind.m").write_text(PART2IND)
    y, x = np.mgrid[0:h, 0:w]
    for i in range(n):
        ident = f"2008_{i:06d}"
        base = rng.integers(0, 255, 3)
        rgb = np.stack([(base[c] + x * (c + 1) // 3 + y * (3 - c) // 3) % 256 for c in range(3)], -1)
        rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)  # photo-like entropy
        Image.fromarray(rgb).save(img_dir / f"{ident}.jpg", quality=90)
        # Context: a few large regions, like real scene labels
        lm = np.full((h, w), 459, np.uint16)
        for lab in rng.choice([2, 59, 285, 431, 17, 300], size=5, replace=False):
            y0, x0 = rng.integers(0, h - 60), rng.integers(0, w - 60)
            lm[y0:y0 + rng.integers(40, 200), x0:x0 + rng.integers(40, 250)] = lab
        write_context_mat(root / "trainval" / f"{ident}.mat", lm)
        objects = []
        for cls, ind, parts in (("person", 15, ["head", "hair", "llleg"]), ("cow", 10, ["head", "lhorn", "lfuleg"]),
                                ("person", 15, ["head", "hair", "llleg"])):
            y0, x0 = rng.integers(0, h - 120), rng.integers(0, w - 120)
            om = np.zeros((h, w), np.uint8)
            om[y0:y0 + 120, x0:x0 + 120] = 1
            plist = []
            for k, pn in enumerate(parts * 1 + parts[:1]):
                pm = np.zeros((h, w), np.uint8)
                pm[y0 + 30 * k:y0 + 30 * k + 30, x0:x0 + 120] = 1
                plist.append((pn, pm))
            objects.append((cls, ind, om, plist))
        write_part_mat(root / "Annotations_Part" / f"{ident}.mat", ident, objects)


def timed_build(sources: list, out: Path, size: int) -> tuple:
    """(wall seconds, CPU seconds of this process) of one complete build with workers=1 (runs in-process)."""
    recipe = recipe_from_dict({"name": "bench", "size": size, "segmentation_size": size // 2,
                               "min_frequency": 1, "min_coverage": 0.0, "sources": sources})
    t0, c0 = time.perf_counter(), time.process_time()
    build_store(recipe, out, workers=1, quiet=True)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cores", type=int, default=8)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t_syn = timed_build([{"type": "synthetic", "count": a.images, "seed": 0}], d / "syn", a.size)
        t0 = time.perf_counter()
        make_pascal_bench(d / "pascal", a.images)
        gen = time.perf_counter() - t0
        t_pas = timed_build([{"type": "pascal", "path": str(d / "pascal")}], d / "pas", a.size)
        from broden_builder.sources.pascal import PascalSource

        src = PascalSource({"type": "pascal", "path": str(d / "pascal")})
        recs = src.records()
        t0 = time.perf_counter()
        for r in recs:
            src.resolve(r)
        t_res = time.perf_counter() - t0
    n = a.images
    print(f"size {a.size}, {n} images per run, 1 worker (wall ms/image; CPU ms/image of the worker)")
    print(f"synthetic (native {a.size}):            {t_syn[0] / n * 1000:7.1f} wall {t_syn[1] / n * 1000:7.1f} CPU")
    print(f"pascal-format (500x375, context+part): {t_pas[0] / n * 1000:7.1f} wall {t_pas[1] / n * 1000:7.1f} CPU "
          f"(resolve alone {t_res / n * 1000:.1f} ms wall; data generation {gen:.1f} s)")
    for label, per in (("CPU", t_pas[1] / n), ("wall", t_pas[0] / n)):
        est = FULL_IMAGES * per / a.cores
        print(f"estimate, {FULL_IMAGES} images on {a.cores} cores at the pascal-format {label} cost: "
              f"{est / 60:.1f} min (target < 30 min)")


if __name__ == "__main__":
    main()
