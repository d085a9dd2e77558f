"""Images per second of the segmenter source: a SegFormer-B0-shaped model (transformers' default
SegformerConfig, 150 ADE20K classes, random weights: the speed does not depend on the weights)
at the 512 x 512 input of nvidia/segformer-b0-finetuned-ade-512-512, on N random 512 x 384 JPEGs.

Measured separately: the model's batched predictions alone (SegmenterSource.prepare: decode,
forward, softmax, labels at the store's sampled pixels) at several batch sizes, and a whole
``build_store`` (224 / 112, colour on, one worker) of the same images.

    python benches/bench_segmenter.py [--images 32] [--device cpu] [--batch-sizes 1,8] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_model(folder: Path) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    cfg = SegformerConfig(num_labels=150, id2label={i: f"class{i}" for i in range(150)},
                          label2id={f"class{i}": i for i in range(150)})
    SegformerForSemanticSegmentation(cfg).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 512, "width": 512}).save_pretrained(folder)


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)).save(folder / f"im{i:04d}.jpg", quality=90)


def time_prepare(entry: dict, work: Path, n: int) -> float:
    from broden_builder.sources.segmenter import SegmenterSource

    src = SegmenterSource(entry, 224, 112)
    src.check()  # loads the model once (not timed)
    recs = src.records()
    t0 = time.perf_counter()
    src.prepare(recs, work, quiet=True)
    return n / (time.perf_counter() - t0)


def time_build(entry: dict, out: Path, n: int) -> float:
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "bench", "size": 224, "segmentation_size": 112, "min_frequency": 1,
                               "min_coverage": 0.0, "sources": [entry]})
    t0 = time.perf_counter()
    build_store(recipe, out, workers=1, quiet=True)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="bench-seg-"))
    if not (tmp / "model" / "config.json").is_file():
        make_model(tmp / "model")
    if len(list((tmp / "images").glob("*.jpg"))) != args.images:
        make_images(tmp / "images", args.images)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
           "device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
           "load": os.getloadavg(), "images": args.images, "prepare_images_per_s": {}}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        entry = {"type": "segmenter", "images": str(tmp / "images"), "model": f"hf:{tmp / 'model'}",
                 "batch_size": bs, "device": args.device}
        out["prepare_images_per_s"][bs] = round(time_prepare(entry, tmp / f"work-{bs}-{time.time_ns()}", args.images), 2)
    entry = {"type": "segmenter", "images": str(tmp / "images"), "model": f"hf:{tmp / 'model'}",
             "batch_size": max(int(b) for b in args.batch_sizes.split(",")), "device": args.device}
    out["build_images_per_s"] = round(time_build(entry, tmp / f"store-{time.time_ns()}", args.images), 2)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
