"""Scores: IoU, best label per category and overall, and the detector flag, as plain Python data."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch

from .tally import Tally


def scores(
    tally: Tally,
    union: str = "original",
    iou_threshold: float = 0.04,
    categories: Optional[Sequence[str]] = None,
    label_names: Optional[Mapping[int, str]] = None,
) -> list:
    """Per unit (in unit order) a dict::

        {"unit_index": u (0-based), "unit": u + 1, "number": n, "label": name, "category": c,
         "iou": float, "detector": iou >= iou_threshold,
         "per_category": {c: {"number", "label", "iou", "truth", "activation", "intersect"}}}

    Labels compete in their primary category; the overall best is the best over ``categories``
    (default: every tallied category). Ties go to the earlier label column. A category without
    labels reports number 0, label "" and IoU 0. ``truth`` = G, ``intersect`` = I,
    ``activation`` = A of that category under ``union``.
    """
    cats = list(categories) if categories is not None else list(tally.categories)
    unknown = [c for c in cats if c not in tally.categories]
    if unknown:
        raise ValueError(f"categories {unknown} were not tallied (tallied: {tally.categories})")
    names = label_names or {}
    name = lambda n: names.get(n, str(n)) if n else ""
    iou = tally.iou(union).cpu()
    prim = torch.tensor([tally.categories.index(c) for c in tally.primary], dtype=torch.long)
    labels = torch.tensor(tally.labels, dtype=torch.long)
    per_cat = _best_per_category(tally, union, iou, prim, labels, cats)
    best_num, best_iou, best_cat = _best_overall(tally, iou, prim, labels, cats)

    lists = {c: {k: v.tolist() for k, v in d.items() if k != "col"} for c, d in per_cat.items()}
    out = []
    for u, (n, v, c) in enumerate(zip(best_num.tolist(), best_iou.tolist(), best_cat)):
        out.append(
            {
                "unit_index": u,
                "unit": u + 1,
                "number": n,
                "label": name(n),
                "category": c,
                "iou": v,
                "detector": bool(n) and v >= iou_threshold,
                "per_category": {
                    cat: {
                        "number": d["number"][u],
                        "label": name(d["number"][u]),
                        "iou": d["iou"][u],
                        "truth": d["truth"][u],
                        "activation": d["activation"][u],
                        "intersect": d["intersect"][u],
                    }
                    for cat, d in lists.items()
                },
            }
        )
    return out


def _best_per_category(
    tally: Tally, union: str, iou: torch.Tensor, prim: torch.Tensor, labels: torch.Tensor, cats: Sequence[str]
) -> dict:
    """Per category: each unit's best label among those whose primary category it is (vectorised over units)."""
    I, G = tally.I.cpu(), tally.G.cpu()
    A = tally.activation(union).cpu()
    U = iou.shape[0]
    units = torch.arange(U)
    per_cat = {}
    for c in cats:  # loop over categories only; units and labels are vectorised
        ci = tally.categories.index(c)
        cols = (prim == ci).nonzero().flatten()
        if cols.numel():
            sub = iou[:, cols]
            best = cols[sub.argmax(1)]
            per_cat[c] = {
                "col": best,
                "iou": iou[units, best],
                "number": labels[best],
                "truth": G[best],
                "intersect": I[units, best],
                "activation": A[:, ci],
            }
        else:
            zero = torch.zeros(U, dtype=torch.long)
            per_cat[c] = {
                "col": None,
                "iou": torch.zeros(U, dtype=torch.float64),
                "number": zero,
                "truth": zero,
                "intersect": zero,
                "activation": A[:, ci],
            }
    return per_cat


def _best_overall(
    tally: Tally, iou: torch.Tensor, prim: torch.Tensor, labels: torch.Tensor, cats: Sequence[str]
) -> tuple:
    """(label number [U], IoU [U], category list) of each unit's best label over ``cats``."""
    U = iou.shape[0]
    pool = [(prim == tally.categories.index(c)) for c in cats]
    allowed = torch.stack(pool).any(0) if pool else torch.zeros(len(tally.labels), dtype=torch.bool)
    if not allowed.any():
        return torch.zeros(U, dtype=torch.long), torch.zeros(U, dtype=torch.float64), [""] * U
    masked = torch.where(allowed.unsqueeze(0), iou, torch.full_like(iou, -1.0))
    best_col = masked.argmax(1)
    return labels[best_col], iou[torch.arange(U), best_col], [tally.primary[j] for j in best_col.tolist()]
