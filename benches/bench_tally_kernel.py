"""The tally kernel alone: ``Tally.add_activations`` over a store's images, one thread, batches of 32.

    python benches/bench_tally_kernel.py --store /tmp/bvl/store1000 --acts /tmp/bvl/acts1000_layer4.npy \
        --thresholds /tmp/o1/acts1000_layer4/thresholds.npy [--repeats 5] [--dtype float16]
        [--src OTHER_CHECKOUT] [--counts out.npz | --compare out.npz]

The label batches are decoded once (not timed); each repeat times the whole pass of
``add_activations`` (labels lookup, tiles, join, counting), CPU (process time) and wall, and prints
both medians in ms per batch. ``--src`` puts another checkout first on sys.path (e.g. a git
worktree of an older revision) so that before and after run the same script; ``--counts`` saves the
counts (I, G, A_original, A_lite, A_all, images), ``--compare`` checks them bit for bit.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

KEYS = ("I", "G", "A_original", "A_lite", "A_all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--acts", required=True, help="float .npy [N, U, h, w] in the store's row order")
    ap.add_argument("--thresholds", required=True, help=".npy [U]")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--mode", default="bilinear")
    ap.add_argument("--src", help="a checkout to import dissect from (before/after comparisons)")
    ap.add_argument("--counts", help="save the counts to this .npz")
    ap.add_argument("--compare", help="compare the counts with this .npz")
    args = ap.parse_args()
    if args.src:
        sys.path.insert(0, os.path.abspath(args.src))
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from broden_builder.store.reader import BrodenStore
    from broden_builder.torch_dataset import BrodenDataset, check_categories, collate_broden
    from dissect.engine._passes import label_columns
    from dissect.stats import Tally

    store = BrodenStore(args.store)
    cats = check_categories(store, None)
    nums, prim, _ = label_columns(store, cats)
    acts = np.load(args.acts, mmap_mode="r")
    N, bs = acts.shape[0], args.batch_size
    thr = torch.from_numpy(np.load(args.thresholds)).float()
    ds = BrodenDataset(store, categories=cats, with_images=False)
    segs = [collate_broden([ds[i] for i in range(lo, min(N, lo + bs))])["seg"] for lo in range(0, N, bs)]
    dt = getattr(torch, args.dtype)
    A = [torch.from_numpy(np.array(acts[lo: lo + bs])).to(dt) for lo in range(0, N, bs)]
    size = segs[0].size
    cpu, wall = [], []
    for _ in range(args.repeats):
        t = Tally(nums, cats, store.image_level_categories, prim, "cpu", units=acts.shape[1])
        c0, w0 = time.process_time(), time.perf_counter()
        for a, seg in zip(A, segs):
            t.add_activations(a, thr.to(dt), seg, mode=args.mode, size=size)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    med = lambda v: sorted(v)[len(v) // 2] * 1000 / len(A)
    print(f"{N} images, {len(A)} batches, {args.dtype}, {args.repeats} repeats: CPU ms/batch median "
          f"{med(cpu):.1f} (runs {' '.join(f'{1000 * x / len(A):.1f}' for x in cpu)}), wall ms/batch median "
          f"{med(wall):.1f}; load average {os.getloadavg()[0]:.1f}")
    counts = {k: getattr(t, k).numpy() for k in KEYS}
    if args.counts:
        np.savez(args.counts, images=t.images, **counts)
    if args.compare:
        ref = np.load(args.compare)
        same = int(ref["images"]) == t.images and all(np.array_equal(ref[k], counts[k]) for k in KEYS)
        print("counts identical" if same else "COUNTS DIFFER")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
