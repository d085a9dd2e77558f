"""NetDissect-Lite's threshold + tally, reimplemented for benchmarking (benches/bench_vs_lite.py).

Written from a reading of CSAILVision/NetDissect-Lite (feature_operation.py: quantile_threshold,
tally_job, tally; util/vecquantile.py: QuantileVector; loader/data_loader.py: label decoding),
not copied. What it does, as Lite does it:

* thresholds: a streaming randomized (KLL-style) quantile sketch per unit, resolution 24 x 1024,
  buffers of 128, levels of capacity resolution x 0.67^k; each full level is sorted and every
  second value (random offset) moves up a level with twice the weight; fed batches of 64 images
  transposed to [images x h x w, units]; read out at 1000 evenly spaced old-style percentiles
  and the threshold is entry int(1000 x (1 - q) - 1) (so approximate, unlike np.quantile);
* tally: for every image, its label planes are decoded from the PNGs (R + 256 G, int16), all
  pixel categories stacked; per unit, when the map's max exceeds T, the map is resized to the
  segmentation size as a PIL float ('F') image with bilinear resampling (scipy.misc.imresize
  mode 'F'), mask = resized > T, and numpy bincounts give the intersections, the label pixel
  counts and the categories met inside the mask ("lite" union: a unit's area counts for a
  category only where a label of that category lies inside the mask);
* labels are loaded ahead by a multiprocessing pool (Lite's SegmentationPrefetcher), the
  features are read from a memory-mapped array, and the module imports torch as Lite's does.

NumPy-2 / current SciPy shims: ``numpy.NaN`` -> ``np.nan``; ``scipy.misc.imresize`` and
``imread`` (removed from SciPy) -> PIL, which is what they called. The primary category of a
label is the category with the most coverage (c_*.csv), ties to the last, as in Lite.

    python benches/lite_reimpl.py --store S --features F.npy --out iou.npy [--thresholds T.npy] [--workers N]
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
import torch  # noqa: F401  (Lite's feature_operation imports torch; its startup cost is part of the process)
from PIL import Image


class KLLQuantiles:
    """Per-unit streaming quantile sketch in the manner of Lite's QuantileVector (own code)."""

    def __init__(self, depth, resolution=24 * 1024, buffersize=None, seed=1):
        self.depth, self.resolution = depth, resolution
        self.buffersize = buffersize or min(128, (resolution + 7) // 8)
        self.levels = [np.zeros((depth, resolution))]
        self.used = [0]
        self.rng = np.random.RandomState(seed)
        self.lo = np.full(depth, np.nan)
        self.hi = np.full(depth, np.nan)

    def _extremes(self, lo, hi):
        self.lo = np.fmin(self.lo, lo)
        self.hi = np.fmax(self.hi, hi)

    def add(self, rows):  # rows [n, depth]
        i, n = 0, len(rows)
        while i < n:
            free = self.levels[0].shape[1] - self.used[0]
            if free == 0:
                self._promote()
                free = self.levels[0].shape[1] - self.used[0]
            k = min(free, n - i)
            self.levels[0][:, self.used[0]: self.used[0] + k] = rows[i: i + k].T
            self.used[0] += k
            i += k

    def _need(self, level):  # room a level must keep: half the previous level's capacity (1 for level 0)
        return -(-self.levels[level - 1].shape[1] // 2) if level else 1

    def _promote(self):
        level = 0
        while self.levels[level].shape[1] - self.used[level] < self._need(level):
            if level + 1 == len(self.levels):
                self._grow()
                return
            block = np.sort(self.levels[level][:, : self.used[level]], axis=1)
            if level == 0:
                self._extremes(block[:, 0], block[:, -1])
            half = block[:, self.rng.binomial(1, 0.5)::2]
            p = self.used[level + 1]
            self.levels[level + 1][:, p: p + half.shape[1]] = half
            self.used[level] = 0
            self.used[level + 1] += half.shape[1]
            level += 1

    def _grow(self):
        cap = int(np.ceil(self.resolution * 0.67 ** len(self.levels)))
        cap = max(self.buffersize, cap) if cap >= 2 else 0
        if cap:
            self.levels.insert(0, np.empty((self.depth, cap)))
            self.used.insert(0, 0)
        for level in range(1, len(self.levels)):  # move each level down, or halve it in place
            amount = self.used[level]
            if not amount:
                continue
            p = self.used[level - 1]
            if self.levels[level - 1].shape[1] - (amount + p) >= (self._need(level - 1)):
                self.levels[level - 1][:, p: p + amount] = self.levels[level][:, :amount]
                self.used[level - 1] += amount
                self.used[level] = 0
            else:
                block = np.sort(self.levels[level][:, :amount], axis=1)
                if level == 1:
                    self._extremes(block[:, 0], block[:, -1])
                half = block[:, self.rng.binomial(1, 0.5)::2]
                self.levels[level][:, : half.shape[1]] = half
                self.used[level] = half.shape[1]

    def readout(self, count):
        if self.used[0]:
            d = self.levels[0][:, : self.used[0]]
            self._extremes(d.min(1), d.max(1))
        vals = [self.lo[:, None], self.hi[:, None]]
        wts = [np.zeros(2)]
        for level, n in enumerate(self.used):
            if n:
                vals.append(self.levels[level][:, :n])
                wts.append(np.full(n, 2.0 ** level))
        vals, w = np.concatenate(vals, 1), np.concatenate(wts).astype(np.float32)
        order = np.argsort(vals, axis=1)
        vals = np.take_along_axis(vals, order, 1)
        w = w[order]
        cw = np.cumsum(w, axis=-1) - w / 2
        cw -= cw[:, :1]
        cw /= cw[:, -1:]
        qs = np.linspace(0.0, 1.0, count)
        return np.array([np.interp(qs, cw[d], vals[d]) for d in range(self.depth)])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Store:
    def __init__(self, root):
        self.root = root
        self.cats = [r["name"] for r in read_csv(os.path.join(root, "category.csv"))]
        self.rows = read_csv(os.path.join(root, "index.csv"))
        n_labels = max(int(r["number"]) for r in read_csv(os.path.join(root, "label.csv"))) + 1
        cover = np.zeros((len(self.cats), n_labels))
        for ci, c in enumerate(self.cats):
            for r in read_csv(os.path.join(root, f"c_{c}.csv")):
                cover[ci, int(r["number"])] = float(r["coverage"])
        # primary category: most coverage, ties to the last category (max over (coverage, index))
        self.primary = np.array([max((cover[ci, n] if cover[ci, n] else 0, ci) for ci in range(len(self.cats)))[1]
                                 for n in range(n_labels)])
        self.labelcat = np.zeros((n_labels, len(self.cats)))
        self.labelcat[np.arange(n_labels), self.primary] = 1
        self.n_labels = n_labels


def load_labels(args):
    """One image's labels, as Lite's resolve_segmentation: (scalars, [layers, sh, sw] int16)."""
    root, row, cats = args
    sh, sw = int(row["sh"]), int(row["sw"])
    scalars, planes = [], []
    for c in cats:
        for item in [s for s in (row.get(c) or "").split(";") if s]:
            if item.isdigit():
                scalars.append(int(item))
            else:
                rgb = np.asarray(Image.open(os.path.join(root, "images", item)).convert("RGB"))
                planes.append((rgb[:, :, 0] + rgb[:, :, 1].astype(np.int16) * 256).astype(np.int16))
    return scalars, (np.stack(planes) if planes else np.zeros((0, sh, sw), np.int16)), (sh, sw)


def imresize_f(m, size):
    """scipy.misc.imresize(m, size, mode='F') with its default bilinear interpolation, via PIL."""
    return np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR))


def tally(store, features, threshold, workers):
    U = features.shape[1]
    L, C = store.n_labels, len(store.cats)
    both = np.zeros((U, L))
    units = np.zeros(U)
    units_cat = np.zeros((U, C))
    labels = np.zeros(L)
    jobs = ((store.root, r, store.cats) for r in store.rows)
    pool = Pool(workers) if workers > 0 else None
    it = pool.imap(load_labels, jobs, chunksize=8) if pool else map(load_labels, jobs)
    for i, (scalars, pixels, (sh, sw)) in enumerate(it):
        for s in scalars:
            labels[s] += sh * sw
        if len(pixels):
            t = np.bincount(pixels.ravel())
            t[0] = 0
            labels[: len(t)] += t
        fmap = np.asarray(features[i])
        for u in range(U):
            if fmap[u].max() > threshold[u]:
                mask = imresize_f(fmap[u], (sh, sw))
                idx = np.argwhere(mask > threshold[u])
                units[u] += len(idx)
                tcat = np.zeros(C)
                if len(pixels) > 0:
                    bt = np.bincount(pixels[:, idx[:, 0], idx[:, 1]].ravel())
                    if len(bt):
                        bt[0] = 0
                    tcat = bt[None, :] @ store.labelcat[: len(bt), :]
                    tcat = tcat[0]
                    both[u, : len(bt)] += bt
                for s in scalars:
                    tcat = tcat + store.labelcat[s]
                    both[u, s] += len(idx)
                units_cat[u] += len(idx) * (tcat > 0)
    if pool:
        pool.close()
        pool.join()
    ucat = units_cat @ store.labelcat.T
    return both / (ucat + labels[None, :] - both + 1e-10)


def quantile_threshold(features, q):
    sk = KLLQuantiles(features.shape[1], seed=1)
    for i in range(0, features.shape[0], 64):
        b = np.asarray(features[i: i + 64])
        sk.add(np.transpose(b, (0, 2, 3, 1)).reshape(-1, features.shape[1]))
    return sk.readout(1000)[:, int(1000 * (1 - q) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quantile", type=float, default=0.005)
    ap.add_argument("--thresholds", help="use these thresholds (.npy) instead of the sketch (for the IoU check)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    t0 = time.perf_counter()
    store = Store(a.store)
    feats = np.load(a.features, mmap_mode="r")
    thr = np.load(a.thresholds) if a.thresholds else quantile_threshold(feats, a.quantile)
    t1 = time.perf_counter()
    iou = tally(store, feats, thr, a.workers)
    np.save(a.out, iou)
    np.save(a.out.replace(".npy", "") + "_thresholds.npy", thr)
    print(f"lite: quantile {t1 - t0:.1f} s, tally {time.perf_counter() - t1:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
