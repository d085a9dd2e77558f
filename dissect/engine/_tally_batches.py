"""Pass 2 by whole batches, counted where the batch is loaded (in a DataLoader worker).

The tally is a sum over images (Bau et al. 2017, sec. 2: I, the label areas and the mask areas
are counts), so a batch's counts can be computed anywhere and added up in any order with the
same integers. :class:`TallyBatches` is a dataset whose item ``k`` is the k-th batch of this
shard's rows: it decodes the label planes, reads the activation rows, checks the label numbers
(in the tally's own label lookup when it counts) and, when given a :class:`TallySpec`, runs
``Tally.add_activations`` of every layer right there
and returns only the counts. With DataLoader workers the images of pass 2 are thus split across
processes, each single-threaded (torch's intra-op threads on these small tensors cost more than
they save, dissect.engine._resources), and the main process only sums. Without a spec (a CUDA device) the batch
carries its label planes and activations to the main process, which tallies on the device.

An error inside a worker comes back as the item ``{"error": exception}`` and is raised by the
main process unchanged, so the user sees the one-line message (no worker traceback text).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from broden_builder.torch_dataset import BrodenDataset, SegBatch, collate_broden

from ._basis import apply_basis
from ._null_pass import label_builder
from ..errors import DissectError
from ..stats import Tally, UnknownLabel, find_unknown_label
from ..stats.upsample import SEPARABLE


@dataclass
class Batch:
    """One batch as the passes see it. ``index``: int64 [B] index.csv rows. Pass 1 carries
    ``image`` float [B, 3, H, W] (from the model's DataLoader) or ``positions`` (rows of an activation
    array); pass 2 carries ``seg`` (the labels, a SegBatch) with ``acts`` {layer: [B, U, h, w]} to
    count in the main process, or ``counts`` {layer: Tally.take_counts()} counted where it was loaded;
    ``error``: the exception a DataLoader worker hit (raised again by the main process)."""

    index: torch.Tensor
    positions: Optional[Sequence[int]] = None
    image: Optional[torch.Tensor] = None
    seg: Optional[SegBatch] = None
    acts: dict = field(default_factory=dict)
    counts: Optional[dict] = None
    error: Optional[Exception] = None
    label_part: Optional[dict] = None  # with --null: this batch's labels per pixel (dissect.engine._null_pass)
    label: Optional[torch.Tensor] = None  # int64 [B]: each image's class (a classifier's data, dissect ablate)

    @classmethod
    def collated(cls, d: dict) -> "Batch":
        """A Batch of collate_broden's dict ("index", "image" and/or "seg", "label")."""
        return cls(index=d["index"], image=d.get("image"), seg=d.get("seg"), label=d.get("label"))


@dataclass
class TallySpec:
    """What a worker needs to count a batch: the Tally's label columns, per layer its thresholds
    T_k [U] (float32) and change of basis [U, U] or SAE encoder (or none; see count_batch), the
    upsampling mode and the segmentation size (sh, sw)."""

    tally_args: tuple
    thresholds: dict
    mode: str
    size: tuple
    bases: dict = field(default_factory=dict)
    label_runs: bool = False  # also return the batch's labels as per-pixel combinations, for the null pass (--null)


def in_basis(a: torch.Tensor, basis) -> torch.Tensor:
    """acts [B, U, h, w] as the statistics see them: unchanged (``basis`` None), float32 combinations
    of the units (a [U, U] matrix), or an SAE's features [B, F, h, w] (an encoder with ``encode_maps``)."""
    if basis is None:
        return a
    return basis.encode_maps(a) if hasattr(basis, "encode_maps") else apply_basis(a.float(), basis)


def count_batch(
    tallies: dict, acts: dict, seg, thresholds: dict, bases: dict, mode: str, size: tuple, labels=None
) -> None:
    """Pass 2's count of one batch, the one counting function (in a DataLoader worker and on a device).

    ``acts`` {layer: [B, U, h, w]} (any dtype; moved to each Tally's device), ``seg`` the batch's
    SegBatch there; per layer its change of basis [U, U] (``bases``, float32 combinations of the
    units, as in pass 1) or SAE encoder (dissect.sae.SparseEncoder: its features [B, F, h, w], then
    T_k is [F]) and thresholds T_k [U]; the maps upsampled by ``mode`` to ``size`` (sh, sw)
    tile by tile (dissect.stats.tally). Adds into ``tallies`` {layer: Tally}; with several layers and
    a separable mode the label lookup is done once for all (or given: ``labels``, Tally.batch_labels).
    Raises UnknownLabel for a number outside the tallies' ``known`` labels."""
    for n, a in acts.items():
        t = tallies[n]
        a = a.to(t.device, non_blocking=True)
        a = in_basis(a, bases.get(n))
        if labels is None and len(acts) > 1 and mode in SEPARABLE:  # one label lookup for all layers
            labels = t.batch_labels(seg, size)
        # upsamples only the tiles where the mask can be set: the counts of add(upsample(a))
        t.add_activations(a, thresholds[n], seg, mode=mode, size=size, labels=labels)


def known_label_table(numbers: Sequence[int]) -> torch.Tensor:
    """Bool [max + 1]: True at the label numbers label.csv holds."""
    known = torch.zeros(max(numbers, default=0) + 1, dtype=torch.bool)
    known[list(numbers)] = True
    return known


def check_known_labels(batch: Batch, known: torch.Tensor, index_csv) -> None:
    """Refuse a label plane holding a number label.csv lacks (what broden validate rejects), naming
    the index.csv row (1-based, as in the file). ``batch``: its ``index`` [B] and ``seg``.
    Raises DissectError. (Counting in a worker, the Tally's own label lookup does this check.)"""
    e = find_unknown_label(batch.seg, known)
    if e is not None:
        raise _unknown_label_error(e, batch, index_csv)


def _unknown_label_error(e: UnknownLabel, batch: Batch, index_csv) -> DissectError:
    return DissectError(f"{index_csv}, row {int(batch.index[e.image]) + 1}: {e}")


def _portable(e: Exception) -> Exception:
    """The exception itself when it survives pickling (DataLoader sends items by pickle), else a
    DissectError with its message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return DissectError(f"{type(e).__name__}: {e}")


class TallyBatches(Dataset):
    """Item k: batch k of ``positions`` (this shard's rows, in order, ``batch_size`` a batch).

    ``labels``: BrodenDataset of the same rows (labels only); ``sources``: {layer: Activations};
    ``known``: :func:`known_label_table`; ``spec``: count here (see the module docstring) or None.
    An item is a :class:`Batch`: ``counts`` {layer: Tally.take_counts()} with a spec, else ``seg`` and
    ``acts`` {layer: float32 [B, U, h, w]}; or ``error``.
    """

    def __init__(
        self,
        labels: BrodenDataset,
        sources: dict,
        positions: Sequence[int],
        batch_size: int,
        known: torch.Tensor,
        spec: Optional[TallySpec] = None,
        cache=None,
    ):
        self.labels, self.sources, self.positions = labels, sources, list(positions)
        self.cache = cache  # a broden_builder LabelCache of the store's decoded planes, or None
        self.batch_size, self.known, self.spec = int(batch_size), known, spec
        self._tallies: Optional[dict] = None  # made once per process, zeroed by take_counts
        self._label_part: Optional[dict] = None

    def __len__(self) -> int:
        return -(-len(self.positions) // self.batch_size)

    def __getitem__(self, k: int) -> Batch:
        try:
            return self._batch(k)
        except Exception as e:  # raised again by the main process (module docstring)
            return Batch(index=torch.zeros(0, dtype=torch.long), error=_portable(e))

    def _batch(self, k: int) -> Batch:
        lo, hi = k * self.batch_size, min(len(self.positions), (k + 1) * self.batch_size)
        batch = Batch.collated(collate_broden(self._label_items(lo, hi)))
        index_csv = self.labels.store.root / "index.csv"
        if self.spec is None or not self.sources:
            check_known_labels(batch, self.known, index_csv)
        acts = {n: torch.from_numpy(src.rows(self.positions[lo:hi])) for n, src in self.sources.items()}
        if self.spec is None:
            return Batch(index=batch.index, seg=batch.seg, acts=acts)
        try:  # the tallies look the label numbers up and refuse those label.csv lacks
            counts = self._count(acts, batch.seg)
        except UnknownLabel as e:
            raise _unknown_label_error(e, batch, index_csv) from None
        part, self._label_part = self._label_part, None
        return Batch(index=batch.index, counts=counts, label_part=part)

    def _label_items(self, lo: int, hi: int) -> list:
        """The label items of batch rows [lo, hi): from the label cache when it holds them unchanged,
        else decoded from the PNGs (and then cached)."""
        if self.cache is None:
            return [self.labels[i] for i in range(lo, hi)]
        rows = self.labels.rows[lo:hi]
        items = self.cache.get(rows)
        if items is None:
            items = [self.labels[i] for i in range(lo, hi)]
            self.cache.put(rows, items)
        return items

    def _count(self, acts: dict, seg) -> dict:
        spec = self.spec
        if self._tallies is None:
            known = self.known.nonzero().squeeze(1).tolist()
            numbers, categories, image_level, primary = spec.tally_args
            self._tallies = {
                n: Tally(numbers, categories, image_level, primary, device="cpu", known=known) for n in acts
            }
        labels = None
        if spec.label_runs and acts:  # the null pass reuses this batch's label lookup (dissect.engine._null_pass)
            t = next(iter(self._tallies.values()))
            labels = t.batch_labels(seg, spec.size)
            self._label_part = label_builder(t, spec.size).part(labels)
        count_batch(
            self._tallies,
            acts,
            seg,
            spec.thresholds,
            spec.bases,
            spec.mode,
            spec.size,
            labels if spec.mode in SEPARABLE else None,
        )
        return {n: self._tallies[n].take_counts() for n in acts}
