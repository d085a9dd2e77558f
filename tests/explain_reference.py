"""Plain references for compositional explanations (tests and benches/bench_explain.py).

``compexp_search`` is a plain re-implementation of compexp's search loop
(jayelm/compexp, vision/dissection/neuron.py, compute_best_iou): one unit at a time, Python
loops over beam formulas, labels and operators, each candidate's mask built from the full label
masks and counted. Masks are numpy bit-packed (np.packbits, counted with np.bitwise_count)
instead of compexp's run-length encoding. ``exhaustive`` enumerates every formula.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

OPS = ("OR", "AND", "AND NOT")


def pack(masks: np.ndarray) -> np.ndarray:
    """bool [..., P] -> uint8 [..., ceil(P / 8)]."""
    return np.packbits(np.asarray(masks, dtype=bool), axis=-1)


def area(packed: np.ndarray) -> int:
    return int(np.bitwise_count(packed).sum(dtype=np.int64))


def combine(f: np.ndarray, op: int, x: np.ndarray) -> np.ndarray:
    return f | x if op == 0 else f & x if op == 1 else f & ~x


def mask_of(formula, label_masks: np.ndarray) -> np.ndarray:
    """formula = (labels, ops) -> packed mask."""
    labels, ops = formula
    m = label_masks[labels[0]]
    for op, lab in zip(ops, labels[1:]):
        m = combine(m, op, label_masks[lab])
    return m


def iou(fmask: np.ndarray, unit: np.ndarray, unit_area: int) -> float:
    inter = area(fmask & unit)
    den = area(fmask) + unit_area - inter
    return inter / den if den > 0 else 0.0


def compexp_search(label_masks: np.ndarray, unit: np.ndarray, length: int = 3, beam: int = 5):
    """compexp's beam search for one unit: packed label masks [L, P8], packed unit mask [P8].

    Returns (best (labels, ops) or None, best iou, best single label or None, its iou)."""
    ua = area(unit)
    L = label_masks.shape[0]
    ious = {}
    for lab in range(L):  # compexp: the labels positive in an image where the unit fires
        if area(label_masks[lab]) == 0:
            continue
        ious[lab] = iou(label_masks[lab], unit, ua)
    nonzero = [(lab, v) for lab, v in ious.items() if v > 0]
    if not nonzero:
        return None, 0.0, None, 0.0
    nonzero.sort(key=lambda t: -t[1])  # stable, as Counter.most_common
    formulas = [(((lab,), ()), v) for lab, v in nonzero[:beam]]
    single = formulas[0]
    labels = [lab for lab in range(L) if area(label_masks[lab]) > 0]
    for _ in range(length - 1):
        new = []
        for (flabs, fops), _v in formulas:
            fmask = mask_of((flabs, fops), label_masks)
            for lab in labels:
                for op in range(3):
                    m = combine(fmask, op, label_masks[lab])
                    new.append(((flabs + (lab,), fops + (op,)), iou(m, unit, ua)))
        pool = formulas + new
        pool.sort(key=lambda t: -t[1])  # stable: the beam first, then the extensions in order
        formulas = pool[:beam]
    best = formulas[0]
    return best[0], best[1], single[0][0][0], single[1]


def exhaustive(label_masks: np.ndarray, unit: np.ndarray, length: int = 3):
    """Best IoU over every left-deep formula of up to ``length`` labels (labels may repeat)."""
    ua = area(unit)
    L = label_masks.shape[0]
    best = 0.0
    for n in range(1, length + 1):
        for labs in itertools.product(range(L), repeat=n):
            for ops in itertools.product(range(3), repeat=n - 1):
                best = max(best, iou(mask_of((labs, ops), label_masks), unit, ua))
    return best


def plain_store_masks(store, acts, thr, numbers):
    """Label masks [L, N * S] and unit masks [U, N * S] read plainly from the store, with the
    activations upsampled by torch's bilinear interpolation (align_corners=False) and > T."""
    col = {n: i for i, n in enumerate(numbers)}
    N = len(store.rows)
    sh, sw = store.rows[0].sh, store.rows[0].sw
    S = sh * sw
    lab = np.zeros((len(numbers), N * S), bool)
    units = np.zeros((acts.shape[1], N * S), bool)
    for i in range(N):
        sl = slice(i * S, (i + 1) * S)
        for c in store.categories:
            if c in store.image_level_categories:
                for n in store.image_labels(i, c):
                    if n in col:
                        lab[col[n], sl] = True
            else:
                for layer in store.pixel_layers(i, c):
                    for y in range(sh):
                        for x in range(sw):
                            n = int(layer[y, x])
                            if n in col:
                                lab[col[n], i * S + y * sw + x] = True
        up = F.interpolate(torch.from_numpy(acts[i: i + 1]), size=(sh, sw), mode="bilinear", align_corners=False)[0]
        units[:, sl] = (up.numpy() > thr[:, None, None]).reshape(acts.shape[1], S)
    return lab, units
