"""Tally throughput on CPU: ResNet-18 layer4-shaped activations (512 x 7 x 7, upsampled to
112 x 112) over a 1,000-image synthetic store, against plain references in the same run.

    python benches/bench_tally.py [--store bench_out/synthetic_1k] [--ref-images 2] [--append]

Builds the store (recipes/synthetic.yaml, 2 workers) when it is missing. The activations are
random (seeded), which is all the tally needs. References: "plain" = the tests' numpy loops
over images, units and labels; "per-unit" = numpy loops over images and units with one
bincount over labels per unit (the style of the NetDissect-Lite tally). Both get the
upsampled maps for free; the vectorised time (Tally.add_activations) includes upsampling.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broden_builder.torch_dataset import load_segbatch  # noqa: E402
from dissect.stats import Tally, TopQuantile, upsample  # noqa: E402

U, H, SEG = 512, 7, 112


def acts_for(batch_no: int, b: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + batch_no)
    return torch.relu(torch.randn(b, U, H, H, generator=g))


def plain_reference(up, thr, store, rows, labels, primary, cats):
    """numpy loops over images, units and labels (as in tests/test_stats_reference.py)."""
    L, C = len(labels), len(cats)
    I = np.zeros((U, L), np.int64); G = np.zeros(L, np.int64)
    Ao = np.zeros((U, C), np.int64); Al = np.zeros((U, C), np.int64); Aa = np.zeros(U, np.int64)
    for bi, i in enumerate(rows):
        seg = store.segmentation(i, cats)
        lm = []
        for n in labels:
            m = np.zeros((SEG, SEG), bool)
            for c in cats:
                if c in store.image_level_categories:
                    m[:, :] |= n in seg[c]
                else:
                    for layer in seg[c]:
                        m |= layer == n
            lm.append(m)
        for j in range(L):
            G[j] += lm[j].sum()
        anyl = [m.any() for m in lm]
        for u in range(U):
            mask = up[bi, u] > thr[u]
            a = int(mask.sum()); Aa[u] += a
            inter = [(mask & lm[j]) for j in range(L)]
            for ci, c in enumerate(cats):
                mine = [j for j in range(L) if primary[labels[j]] == c]
                if any(anyl[j] for j in mine):
                    Ao[u, ci] += a
                if any(inter[j].any() for j in mine):
                    Al[u, ci] += a
            for j in range(L):
                I[u, j] += int(inter[j].sum())
    return I, G, Ao, Al, Aa


def per_unit_reference(up, thr, store, rows, labels, primary, cats):
    """numpy loops over images and units; one bincount over the labels of the mask pixels."""
    L, C = len(labels), len(cats)
    col = np.full(max(labels) + 1, L, np.int64); col[labels] = np.arange(L)
    pc = np.array([cats.index(primary[n]) for n in labels] + [C])
    I = np.zeros((U, L + 1), np.int64); Aa = np.zeros(U, np.int64)
    Ao = np.zeros((U, C), np.int64); Al = np.zeros((U, C), np.int64)
    for bi, i in enumerate(rows):
        seg = store.segmentation(i, cats)
        planes = [col[np.clip(l, 0, len(col) - 1)] for c in cats if c not in store.image_level_categories for l in seg[c]]
        P = np.stack(planes).reshape(len(planes), -1) if planes else np.zeros((0, SEG * SEG), np.int64)
        imgl = sorted({int(col[n]) for c in cats if c in store.image_level_categories for n in seg[c] if n < len(col)} - {L})
        # one entry per (pixel, label)
        P = np.sort(P, 0)
        if len(P) > 1:
            P[1:][P[1:] == P[:-1]] = L
        for j in imgl:
            P[P == j] = L
        present = np.zeros(C + 1, bool); present[pc[np.unique(P)]] = True; present[pc[imgl]] = True
        for u in range(U):
            m = up[bi, u].ravel() > thr[u]
            a = int(m.sum()); Aa[u] += a
            bc = np.bincount(P[:, m].ravel(), minlength=L + 1)
            I[u] += bc
            I[u, imgl] += a
            inside = np.zeros(C + 1, bool); inside[pc[np.nonzero(bc)[0]]] = True; inside[pc[imgl]] = a > 0
            Ao[u] += a * present[:C]; Al[u] += a * inside[:C]
    return I[:, :L], Ao, Al, Aa


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(REPO / "bench_out" / "synthetic_1k"))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--ref-images", type=int, default=2, help="images for the plain reference")
    ap.add_argument("--unit-ref-images", type=int, default=10, help="images for the per-unit reference")
    ap.add_argument("--append", action="store_true", help="append the numbers to benches/RESULTS.md")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    load0 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    store_dir = Path(a.store)
    if not (store_dir / "index.csv").exists():
        from broden_builder.build import build_store
        from broden_builder.recipe import load_recipe
        print(f"building {store_dir} ...", flush=True)
        build_store(load_recipe(REPO / "recipes" / "synthetic.yaml"), store_dir, workers=2, quiet=True)
    from broden_builder.store.reader import BrodenStore
    store = BrodenStore(store_dir)
    n = min(a.images, len(store))
    cats = list(store.categories)
    labels = [l.number for l in store.labels]
    primary = {x: store.primary_category(x) for x in labels}

    t0 = time.perf_counter()
    segs = [load_segbatch(store, range(s, min(n, s + a.batch)), cats) for s in range(0, n, a.batch)]
    t_load = time.perf_counter() - t0

    tq = TopQuantile(U, 0.005, n * H * H)
    t0 = time.perf_counter()
    for k, s in enumerate(range(0, n, a.batch)):
        tq.add(acts_for(k, min(n, s + a.batch) - s))
    thr = tq.thresholds()
    t_q = time.perf_counter() - t0

    tally = Tally(labels, cats, store.image_level_categories, primary)
    t0 = time.perf_counter()
    for k, s in enumerate(range(0, n, a.batch)):
        tally.add_activations(acts_for(k, min(n, s + a.batch) - s), thr, segs[k])
    t_fast = time.perf_counter() - t0
    fast = n / t_fast

    # the dense path (full upsample, then add) on the first batch
    dense_tally = Tally(labels, cats, store.image_level_categories, primary)
    nb = min(n, a.batch)
    acts0 = acts_for(0, nb)
    d0 = time.perf_counter()
    up = upsample(acts0, (SEG, SEG))
    d1 = time.perf_counter()
    dense_tally.add(up, thr, segs[0])
    d2 = time.perf_counter()
    del up
    sparse0 = Tally(labels, cats, store.image_level_categories, primary)
    sparse0.add_activations(acts0, thr, segs[0])
    ok_dense = all(torch.equal(getattr(dense_tally, k), getattr(sparse0, k)) for k in ("I", "G", "A_original", "A_lite", "A_all"))

    # references on the first images of batch 0 (same activations, pre-upsampled for free)
    up0 = upsample(acts_for(0, min(n, a.batch)), (SEG, SEG)).numpy()
    thr_np = thr.numpy()
    check = Tally(labels, cats, store.image_level_categories, primary)
    r = max(a.ref_images, a.unit_ref_images)
    seg_r = load_segbatch(store, range(r), cats)
    check.add(torch.from_numpy(up0[:r]), thr, seg_r)
    t0 = time.perf_counter()
    ref_u = per_unit_reference(up0[: a.unit_ref_images], thr_np, store, list(range(a.unit_ref_images)), labels, primary, cats)
    t_unit = (time.perf_counter() - t0) / a.unit_ref_images
    check_u = Tally(labels, cats, store.image_level_categories, primary)
    check_u.add(torch.from_numpy(up0[: a.unit_ref_images]), thr, load_segbatch(store, range(a.unit_ref_images), cats))
    ok_unit = all(np.array_equal(x, y.numpy()) for x, y in zip(ref_u, (check_u.I, check_u.A_original, check_u.A_lite, check_u.A_all)))
    t0 = time.perf_counter()
    ref_p = plain_reference(up0[: a.ref_images], thr_np, store, list(range(a.ref_images)), labels, primary, cats)
    t_plain = (time.perf_counter() - t0) / a.ref_images
    check_p = Tally(labels, cats, store.image_level_categories, primary)
    check_p.add(torch.from_numpy(up0[: a.ref_images]), thr, load_segbatch(store, range(a.ref_images), cats))
    ok_plain = all(np.array_equal(x, y.numpy()) for x, y in zip(ref_p, (check_p.I, check_p.G, check_p.A_original, check_p.A_lite, check_p.A_all)))

    lines = [
        f"load average at start {load0}; " 
        f"store {store_dir.name}: {n} images, {len(labels)} labels, categories {cats}, seg {SEG}x{SEG}, "
        f"activations {U}x{H}x{H} (random, seeded), batch {a.batch}, torch threads {torch.get_num_threads()}",
        f"label loading (PNG decode, not timed below): {n / t_load:.1f} images/s",
        f"TopQuantile (exact, q=0.005): {n / t_q:.0f} images/s",
        f"vectorised Tally.add_activations (upsampling only the tiles that can pass T, included): {fast:.1f} images/s "
        f"({1000 / fast:.2f} ms/image)",
        f"dense path on {nb} images: upsample {1000 * (d1 - d0) / nb:.1f} ms/image + Tally.add {1000 * (d2 - d1) / nb:.1f} ms/image "
        f"= {nb / (d2 - d0):.1f} images/s; counts identical to add_activations: {ok_dense}",
        f"plain reference (loops over images, units, labels; {a.ref_images} images): {1 / t_plain:.3f} images/s "
        f"-> vectorised is {fast * t_plain:.0f}x faster; counts identical: {ok_plain}",
        f"per-unit reference (loops over images, units; bincount over labels; {a.unit_ref_images} images): "
        f"{1 / t_unit:.2f} images/s -> vectorised is {fast * t_unit:.1f}x faster; counts identical: {ok_unit}",
    ]
    print("\n".join(lines))
    if a.append:
        path = REPO / "benches" / "RESULTS.md"
        head = "" if path.exists() else "# Benchmark results\n\nEach section: machine, command, numbers.\n"
        text = head + (
            f"\n## Tally throughput (dissect.stats, issue 3)\n\nMachine: 2 cores, 24 GiB, no GPU "
            f"({platform.processor() or platform.machine()}, torch {torch.__version__}).\n"
            f"Command: `.venv/bin/python benches/bench_tally.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n" + "".join(f"- {l}\n" for l in lines)
        )
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    return 0 if (ok_plain and ok_unit and ok_dense) else 1


if __name__ == "__main__":
    sys.exit(main())
