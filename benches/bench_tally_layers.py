"""Tally kernel alone (Tally.add_activations, one thread, CPU seconds) on the activations and store
that benches/bench_vs_lite.py prepared, so any revision can be timed on the same data:

    PYTHONPATH=REPO python benches/bench_tally_layers.py --workdir /tmp/bench_vs_lite --layer layer1 --batches 4

Prints images/s of CPU time and saves the counts (I, G, A_*) to --counts so two revisions can be
compared for identity (np.array_equal). Thresholds: exact TopQuantile over the whole array.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from broden_builder.store.reader import BrodenStore
from broden_builder.torch_dataset import BrodenDataset, collate_broden
from dissect.stats import Tally, TopQuantile

try:
    from dissect.engine._passes import label_columns
except ImportError:  # revisions before the engine split
    from dissect.engine._runner import label_columns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/bench_vs_lite")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--counts", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    st = BrodenStore(f"{a.workdir}/store{a.images}")
    cats = list(st.categories)
    numbers, primary, _ = label_columns(st, cats)
    acts = np.load(f"{a.workdir}/acts{a.images}_{a.layer}.npy", mmap_mode="r")
    tq = TopQuantile(acts.shape[1], 0.005, acts.shape[0] * acts.shape[2] * acts.shape[3])
    for i in range(0, acts.shape[0], 32):
        tq.add(torch.from_numpy(np.array(acts[i:i + 32])))
    thr = tq.thresholds()
    ds = BrodenDataset(st, categories=cats, with_images=False)
    segs = [collate_broden([ds[i] for i in range(b * 32, b * 32 + 32)])["seg"] for b in range(a.batches)]
    A = [torch.from_numpy(np.array(acts[b * 32:b * 32 + 32])) for b in range(a.batches)]
    t = Tally(numbers, cats, st.image_level_categories, primary)
    c0 = time.process_time()
    for x, s in zip(A, segs):
        t.add_activations(x, thr, s, size=(st.rows[0].sh, st.rows[0].sw))
    dt = time.process_time() - c0
    print(f"{a.layer} {tuple(acts.shape[1:])}: {a.batches * 32 / dt:.0f} images/s (CPU, one thread)")
    if a.counts:
        np.save(a.counts, np.concatenate([getattr(t, k).numpy().ravel() for k in ("I", "G", "A_original", "A_lite", "A_all")]))


if __name__ == "__main__":
    main()
