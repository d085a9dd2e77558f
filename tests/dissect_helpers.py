"""Helpers for the dissect runner/CLI tests: a tiny store, tiny models, a plain IoU reference."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TINY_MODEL_SOURCE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 5, 3, stride=2, padding=1))
        self.head = nn.Linear(5 * 8 * 8, 3)  # only fits 64 x 64 inputs

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def tiny():
    torch.manual_seed(1)
    return Tiny()


class NanUnit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.poison = Poison()

    def forward(self, x):
        return self.poison(self.conv(x))


class Poison(nn.Module):
    def forward(self, x):
        x = x.clone()
        x[:, 2] = float("nan")
        return x


def nan_unit():
    return NanUnit()


def not_a_module():
    return 42
'''


def reference_iou(acts: np.ndarray, thr: np.ndarray, store, rows, units, union="original"):
    """Plain loops over images and units: IoU [len(units), L] with L = labels of the store in
    number order (primary category from BrodenStore.primary_category), 'original' or 'all'."""
    labels = [l.number for l in store.labels]
    primary = {n: store.primary_category(n) for n in labels}
    cats = list(store.categories)
    L = len(labels)
    I = np.zeros((len(units), L), np.int64)
    G = np.zeros(L, np.int64)
    A = np.zeros((len(units), len(cats)), np.int64)
    for k, i in enumerate(rows):
        row = store.rows[i]
        sh, sw = row.sh, row.sw
        lmask = {}
        for n in labels:
            m = np.zeros((sh, sw), bool)
            for c in cats:
                if c in store.image_level_categories:
                    if n in store.image_labels(i, c):
                        m[:] = True
                else:
                    for layer in store.pixel_layers(i, c):
                        m |= layer == n
            lmask[n] = m
        for j, n in enumerate(labels):
            G[j] += lmask[n].sum()
        up = F.interpolate(torch.from_numpy(np.asarray(acts[k:k + 1], dtype=np.float32)), size=(sh, sw),
                           mode="bilinear", align_corners=False)[0].numpy()
        for a, u in enumerate(units):
            mask = up[u] > thr[u]
            for j, n in enumerate(labels):
                I[a, j] += (mask & lmask[n]).sum()
            for ci, c in enumerate(cats):
                carries = any(lmask[n].any() for n in labels if primary[n] == c)
                if union == "all" or carries:
                    A[a, ci] += mask.sum()
    out = np.zeros((len(units), L))
    for a in range(len(units)):
        for j, n in enumerate(labels):
            den = A[a, cats.index(primary[n])] + G[j] - I[a, j]
            out[a, j] = I[a, j] / den if den > 0 else 0.0
    return out, labels
