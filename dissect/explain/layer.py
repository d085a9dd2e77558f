"""Compositional explanations of one layer over a Broden store.

``explain_activations(acts, thresholds, store)`` makes one pass over the images: the labels of
each batch (DataLoader workers) become pixel label sets, the unit masks are the tally's own
(``Tally.add_activations``: activation upsampled with the configured mode, > T_k), and both are
reduced to MaskCounts; then ``beam_search`` runs on the counts for every unit at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from broden_builder import BrodenStore
from broden_builder.torch_dataset import check_categories, select_rows

from ..stats.tiles import mask_entries
from ..stats.upsample import SEPARABLE, upsample as upsample_acts
from ..results import predicted_label_models
from .counts import AtomBuilder, MaskCounts, pixel_label_keys
from .search import SearchResult, beam_search


def unit_mask_entries(
    acts: torch.Tensor,
    thresholds: torch.Tensor,
    size: Sequence[int],
    mode: str = "bilinear",
    field=None,
    input_size=None,
) -> tuple:
    """Mask pixels of acts [B, U, h, w] upsampled to ``size`` and thresholded (> T [U]):
    (unit [n], pixel [n] = b * sh * sw + y * sw + x), the mask the tally counts (bicubic: dense)."""
    if mode in SEPARABLE and acts.is_floating_point():
        return mask_entries(acts, thresholds, size, mode, field, input_size)
    B, U = acts.shape[:2]
    up = upsample_acts(acts, size, mode, field=field, input_size=input_size)
    flat = (up > thresholds.to(up.device, up.dtype).view(1, U, 1, 1)).reshape(-1).nonzero().squeeze(1)
    S = int(size[0]) * int(size[1])
    return (flat // S) % U, (flat // (U * S)) * S + flat % S


@dataclass
class LayerExplanations:
    """Explanations of every unit of a layer: ``search`` (the SearchResult), ``numbers`` (global
    label number of each label column), ``names`` ({number: name}), ``categories`` searched,
    ``settings`` and ``timings`` (seconds)."""

    search: SearchResult
    numbers: list
    names: dict
    categories: list
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    #: {label name: "MODEL"} of the store's labels a segmentation model predicted (not annotated)
    predicted: dict = field(default_factory=dict)

    def column_name(self, c: int) -> str:
        n = self.numbers[c]
        return self.names.get(n, str(n))

    def rows(self) -> list:
        """One dict per unit (unit 1-based as tally.csv): unit, formula, iou, single_iou,
        single_label, length, and ``predicted`` ("name: MODEL; ..." for the formula's labels a
        segmentation model predicted, "" when all are annotated)."""
        s = self.search
        out = []
        ious, sious, slab = s.iou.tolist(), s.single_iou.tolist(), s.single_label.tolist()
        for u in range(len(ious)):
            f = s.formula(u)
            used = [self.column_name(c) for c in f.labels]
            pred = "; ".join(f"{n}: {self.predicted[n]}" for n in dict.fromkeys(used) if n in self.predicted)
            out.append(
                {
                    "unit": u + 1,
                    "formula": f.text(self.column_name),
                    "iou": ious[u],
                    "single_iou": sious[u],
                    "single_label": self.column_name(slab[u]) if slab[u] >= 0 else "",
                    "length": len(f),
                    "predicted": pred,
                }
            )
        return out


def _label_columns(store: BrodenStore, categories):
    from ..engine import label_columns  # one rule for which labels a layer is scored on

    return label_columns(store, categories)


def collect_counts(
    activations,
    thresholds,
    store: BrodenStore,
    rows: Sequence[int],
    categories: Sequence[str],
    numbers: Sequence[int],
    upsample: str = "bilinear",
    batch_size: int = 32,
    workers: int = 0,
    device="cpu",
    progress=None,
    basis=None,
) -> MaskCounts:
    """MaskCounts of ``activations`` ([N, U, h, w] array-like, row k = store row rows[k]) with
    thresholds [U] against labels ``numbers`` (columns in this order) of ``categories``.
    ``basis`` [U, U] (optional): the units are ``basis @ units`` before the thresholds; or an SAE
    encoder (dissect.sae.SparseEncoder): its F features [N, F, h, w] are thresholded (F thresholds)."""
    from ..engine import apply_basis, label_batches

    d = torch.device(device)
    sae = basis.to(d) if hasattr(basis, "encode_maps") else None
    U = sae.features if sae is not None else int(activations.shape[1])
    thr = torch.as_tensor(np.asarray(thresholds, dtype=np.float32)).to(d)
    mat = None if basis is None or sae is not None else torch.as_tensor(np.asarray(basis, dtype=np.float64)).to(d)
    if thr.numel() != U:
        raise ValueError(f"{thr.numel()} thresholds for {U} units")
    maxn = max(list(numbers) + [0])
    lut = torch.full((maxn + 1,), -1, dtype=torch.long)
    lut[torch.tensor(list(numbers), dtype=torch.long)] = torch.arange(len(numbers))
    lut = lut.to(d)
    pix_cats = [c for c in categories if c not in store.image_level_categories]
    img_cats = [c for c in categories if c in store.image_level_categories]
    batches = label_batches(store, rows, categories, batch_size, workers)  # as the engine reads labels
    builder = AtomBuilder(len(numbers))
    sizes = {(store.rows[i].sh, store.rows[i].sw) for i in rows}
    if len(sizes) != 1:
        raise ValueError(f"{store.root / 'index.csv'}: images have different segmentation sizes {sorted(sizes)[:4]}")
    size = sizes.pop()
    lo = 0
    for batch in batches:
        seg = batch.seg.to(d)
        n = int(batch.index.numel())
        a = torch.from_numpy(np.array(activations[lo : lo + n], dtype=np.float32)).to(d)
        a = sae.encode_maps(a) if sae is not None else apply_basis(a, mat)
        lo += n
        eu, ep = unit_mask_entries(a, thr, size, mode=upsample)
        keys = pixel_label_keys(seg, lut, len(numbers), pix_cats, img_cats)
        builder.add(keys, eu, ep, images=n)
        if progress is not None:
            progress(n)
    return builder.finish(U, device=d)


def _explain_inputs(activations, store, categories: Optional[Sequence[str]], split: Optional[str], rows) -> tuple:
    """(store, categories, rows, activations) of :func:`explain_activations`, checked: the split's
    rows of activations of every row; ValueError for mismatched shapes, unknown categories or split."""
    store = store if isinstance(store, BrodenStore) else BrodenStore(store)
    cats = check_categories(store, categories)
    if rows is None:
        rows = select_rows(store, split)
        if split is not None and activations.shape[0] == len(store.rows):
            # activations of every row: take the split's rows
            activations = _Rows(activations, rows)
    rows = list(rows)
    if activations.shape[0] != len(rows):
        raise ValueError(f"activations hold {activations.shape[0]} images, expected {len(rows)} (index.csv order)")
    if len(activations.shape) != 4:
        raise ValueError(f"activations must be [N, units, h, w], got shape {tuple(activations.shape)}")
    return store, cats, rows, activations


def _counts_with_progress(quiet: bool, activations, thresholds, store, rows, cats, numbers, **kwargs) -> MaskCounts:
    """collect_counts(...) with a progress bar over the images (``rows``) unless ``quiet``."""
    bar = None
    if not quiet:
        from broden_builder.shared import progress

        bar = progress(total=len(rows), desc="explain: masks and labels", unit="img", leave=False)
    update = bar.update if bar is not None else None
    counts = collect_counts(activations, thresholds, store, rows, cats, numbers, progress=update, **kwargs)
    if bar is not None:
        bar.close()
    return counts


def explain_activations(
    activations,
    thresholds,
    store,
    categories: Optional[Sequence[str]] = None,
    split: Optional[str] = None,
    rows: Optional[Sequence[int]] = None,
    length: int = 3,
    beam: int = 5,
    upsample: str = "bilinear",
    batch_size: int = 32,
    workers: int = 0,
    device="cpu",
    quiet: bool = True,
    basis=None,
) -> LayerExplanations:
    """Explain every unit of activations [N, U, h, w] (index.csv order, or the order of
    ``rows`` / of ``split``'s rows) thresholded at ``thresholds`` [U] (the layer's T_k), after
    the change of basis ``basis`` [U, U] when given (see dissect.engine._basis).

    Raises ValueError for mismatched shapes, unknown categories or split.
    """
    store, cats, rows, activations = _explain_inputs(activations, store, categories, split, rows)
    numbers, _primary, names = _label_columns(store, cats)
    t0 = time.perf_counter()
    counts = _counts_with_progress(
        quiet,
        activations,
        thresholds,
        store,
        rows,
        cats,
        numbers,
        upsample=upsample,
        batch_size=batch_size,
        workers=workers,
        device=device,
        basis=basis,
    )
    t1 = time.perf_counter()
    res = beam_search(counts, length=length, beam=beam)
    t2 = time.perf_counter()
    return LayerExplanations(
        res,
        list(numbers),
        names,
        cats,
        settings={
            "length": length,
            "beam": beam,
            "upsample": upsample,
            "categories": cats,
            "images": len(rows),
            "atoms": counts.n_atoms,
            "candidate_labels": int((counts.label_area() > 0).sum()),
        },
        timings={"counts": t1 - t0, "search": t2 - t1},
        predicted=predicted_label_models(store.build_info),
    )


class _Rows:
    """Rows ``rows`` of an array-like, read lazily (``a[i:j]`` -> the rows' stack)."""

    def __init__(self, a, rows):
        self.a, self.rows = a, list(rows)
        self.shape = (len(self.rows),) + tuple(a.shape[1:])

    def __getitem__(self, sl):
        return (
            np.stack([np.asarray(self.a[i]) for i in self.rows[sl]])
            if self.rows[sl]
            else np.zeros((0,) + self.shape[1:])
        )
