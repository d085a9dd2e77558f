"""The two passes shared by ``dissect_model`` and ``score_activations``.

A dissection is: pass 1 feeds each layer's activations to TopQuantile (thresholds) and
TopKImages; the ranks merge them; pass 2 feeds the activations with the label planes to Tally;
the ranks sum the counts; the counts are scored. Both entry points run the same loop,
:func:`run_pass`, and differ only in their ``compute`` function (a batch -> {layer: activations}),
as in netdissect's ``tally(compute, dataset)``: a new input kind is a new ``compute`` function.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from broden_builder import BrodenStore
from broden_builder.shared import InputError, note
from broden_builder.torch_dataset import BrodenDataset, check_categories, select_rows

from .. import __version__
from ._basis import BasisError, resolve_basis
from ._checkpoint import Checkpoint
from ..config import DissectConfig, recorded
from ._distributed import DistInfo, all_reduce_sum_, barrier, dist_info, shard, sync
from ..errors import DissectError
from ._resources import apply_threads
from ._resources import choose as choose_parallelism
from ._resources import workers_for_file_limit
from ..results import LayerResult, build_layer_result, layer_folder, predicted_label_models, write_layer_result
from ..sae import SAEError, load_sae
from ..stats import Tally, TopKImages, TopQuantile, UnitRange
from ._model_input import batch_loader
from ._null_pass import check_null_memory, null_pass
from ._tally_batches import Batch, TallyBatches, TallySpec, count_batch, in_basis, known_label_table

log = logging.getLogger(__name__)


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' -> this rank's GPU. Raises DissectError without CUDA."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DissectError("--device cuda was asked for but no CUDA device is available")
        if spec == "cuda":
            return torch.device("cuda", info.local_rank if info.active else torch.cuda.current_device())
    try:
        return torch.device(spec)
    except (RuntimeError, ValueError):
        raise DissectError(f"--device {spec!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None


def label_columns(store: BrodenStore, categories: Sequence[str]) -> tuple:
    """(numbers, primary {number: category}, names {number: name}) of the labels whose primary
    category is selected, in number order. Primary = most coverage in c_*.csv (first category wins
    ties), else the category with most images (as BrodenStore.primary_category)."""
    best: dict = {}
    for cat, entries in store.category_maps.items():
        for e in entries:
            if e.number not in best or e.coverage > best[e.number][1]:
                best[e.number] = (cat, e.coverage)
    primary = {}
    for lab in store.labels:
        if lab.number in best:
            primary[lab.number] = best[lab.number][0]
        elif lab.categories:
            primary[lab.number] = next(iter(lab.categories))
    chosen = set(categories)
    numbers = sorted(n for n, c in primary.items() if c in chosen)
    return numbers, {n: primary[n] for n in numbers}, {l.number: l.name for l in store.labels}


# ---------------------------------------------------------------------------- statistics of a run
@dataclass
class LayerStatistics:
    """One layer's statistics: pass 1's TopQuantile (thresholds), TopKImages and UnitRange, pass 2's Tally."""

    quantile: TopQuantile
    topk: TopKImages
    tally: Tally
    range: UnitRange  # each unit's min and max: constant units (dissect.stats.unit_range)

    #: The names they have in a checkpoint (kept from the checkpoint format).
    SAVED = {"tq": "quantile", "topk": "topk", "tally": "tally", "range": "range"}

    def pass1(self) -> tuple:
        return self.quantile, self.topk, self.range

    def state_dict(self) -> dict:
        return {k: getattr(self, f).state_dict() for k, f in self.SAVED.items()}

    def load_state_dict(self, d: dict) -> None:
        for k, f in self.SAVED.items():
            getattr(self, f).load_state_dict(d[k])


class Statistics:
    """Per layer a LayerStatistics, checkpointed and synced as a whole.

    ``shapes``: {layer: (U, h, w)}; ``n_images``: images over all ranks (sets the quantile's count).
    """

    def __init__(self, shapes: dict, n_images: int, cfg: DissectConfig, tally_args: tuple, device: torch.device):
        self.shapes = {k: tuple(int(x) for x in v) for k, v in shapes.items()}
        self.device, self.cfg = device, cfg
        self.layers: dict = {}
        self.tally_args = tally_args
        numbers, categories, image_level, primary = tally_args
        self.saes = load_saes(cfg, self.shapes, device)  # {layer: SparseEncoder}: features instead of units
        units = {n: self.saes[n].features if n in self.saes else u for n, (u, _h, _w) in self.shapes.items()}
        check_null_memory(units, cfg.null)  # before any pass: what --null N would keep
        for name, (u, h, w) in self.shapes.items():
            u = units[name]
            self.layers[name] = LayerStatistics(
                TopQuantile(u, cfg.quantile, n_images * h * w, device, memory_budget=cfg.quantile_memory),
                TopKImages(u, cfg.top_k, device, maps_dtype=torch.float32),
                Tally(numbers, categories, image_level, primary, device=device, units=u),
                UnitRange(u, device),
            )
        self.thresholds: dict = {}
        self.seg_size: Optional[tuple] = None
        # a change of basis of each layer's units before every statistic (Bau et al. 2017, sec. 3.2)
        self.bases, self.basis_records = {}, {}
        for name, (u, _h, _w) in self.shapes.items():
            try:
                m, rec = resolve_basis(u, cfg.rotate, cfg.basis)
            except BasisError as e:
                raise DissectError(f"layer {name!r}: {e}") from None
            if m is not None:
                self.bases[name] = torch.from_numpy(m).to(device)
                self.basis_records[name] = rec
        self.bases.update(self.saes)  # an SAE's encoder is applied where a basis would be

    def _in_basis(self, layer: str, a: torch.Tensor) -> torch.Tensor:
        """acts [B, U, h, w] on the device as every statistic sees them: the cache dtype kept, or with a
        rotated basis float32 combinations of the units, or with an SAE its features [B, F, h, w] (the
        same values in pass 1, the extra pass and pass 2, so thresholds and masks agree)."""
        return in_basis(a.to(self.device, non_blocking=True), self.bases.get(layer))

    def add(self, pass_no: int, acts: dict, batch: Batch) -> None:
        """Pass 1: acts {layer: [B, U, h, w]} of index.csv rows ``batch.index``; pass 2: with ``batch.seg``
        (counted here by count_batch), or the batch's counts already taken where it was loaded
        (``batch.counts``, dissect.engine._tally_batches)."""
        if pass_no == 1:
            idx = batch.index.to(self.device)
            for n, a in acts.items():
                a = self._in_basis(n, a)
                self.layers[n].quantile.add(a)
                self.layers[n].topk.add(a, idx)
                self.layers[n].range.add(a)
            return
        if batch.counts is not None:
            for n, counts in batch.counts.items():
                self.layers[n].tally.add_counts(counts)
            return
        count_batch(
            {n: s.tally for n, s in self.layers.items()},
            acts,
            batch.seg.to(self.device),
            self.thresholds,
            self.bases,
            self.cfg.upsample,
            self.seg_size,
        )

    def rescan_thresholds(self, sources: dict, positions: Sequence[int], batch_size: int, info: DistInfo) -> None:
        """The extra pass of a quantile that chose its histogram method (float32 values over its memory
        budget): this shard's values again, the histograms summed over the ranks (dissect.stats.quantile)."""
        for n, stats in self.layers.items():
            tq = stats.quantile
            while tq.needs_rescan:
                for lo in range(0, len(positions), batch_size):
                    tq.rescan(self._in_basis(n, torch.from_numpy(sources[n].rows(positions[lo : lo + batch_size]))))
                if info.active:
                    count = torch.tensor([tq.rescan_count], dtype=torch.long)
                    all_reduce_sum_([tq.hist, count], self.device)
                    tq.rescan_count = int(count.item())
                tq.end_rescan()

    def start_pass2(self, seg_size: tuple) -> None:
        self.seg_size = seg_size
        self.thresholds = {n: s.quantile.thresholds().to(self.device, torch.float32) for n, s in self.layers.items()}

    def sync_pass1(self, info: DistInfo) -> None:
        """Combine every layer's pass-1 statistics over the ranks (as each declares)."""
        for stats in self.layers.values():
            for stat in stats.pass1():
                sync(stat, info)

    def sync_counts(self, info: DistInfo) -> None:
        """Sum every layer's Tally over the ranks."""
        for stats in self.layers.values():
            sync(stats.tally, info)

    def state_dict(self) -> dict:
        return {
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "layers": {n: stats.state_dict() for n, stats in self.layers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        for n, stats in self.layers.items():
            stats.load_state_dict(state["layers"][n])


def run_pass(
    batches: Iterable,
    compute: Callable[[Batch], dict],
    stats: Statistics,
    checkpoint: Checkpoint,
    pass_no: int,
    start: int,
    bar,
) -> None:
    """The loop of both passes: ``stats.add(compute(batch))`` for every batch (numbered from
    ``start``; each a :class:`Batch`), checkpointing as configured."""
    done = start
    try:
        for batch in batches:
            stats.add(pass_no, compute(batch), batch)
            done += 1
            checkpoint.step(pass_no, done, stats)
            bar.update(1)
    except RuntimeError as e:  # torch's message for a worker that failed or that the system killed
        if "DataLoader worker" not in str(e):
            raise
        raise worker_failure(e, pass_no) from None
    bar.close()


def _input_error_names(cls: type = InputError) -> set:
    """The qualified names of ``cls`` and all its subclasses (``module.Class``)."""
    names = {f"{cls.__module__}.{cls.__qualname__}"}
    subclasses: list[type] = cls.__subclasses__()
    for sub in subclasses:
        names |= _input_error_names(sub)
    return names


def worker_failure(e: RuntimeError, pass_no: int) -> Exception:
    """The error to raise for torch's RuntimeError about a DataLoader worker.

    torch re-raises an exception of a worker as its own class only when that class can be made
    from one message string; others (``StoreFormatError(path, message, row)``) arrive as a
    RuntimeError "Caught NAME in DataLoader worker process K" holding the worker's traceback, whose
    last line is ``module.NAME: message``. Bad input (an InputError, e.g. a truncated image or a
    FIFO in the store) becomes that one-line message; any other caught exception stays a bug
    (``e``); only a worker that vanished is reported as killed from outside."""
    text = str(e)
    if text.startswith("Caught "):
        last = text.rstrip().splitlines()[-1]
        name, sep, message = last.partition(": ")
        if sep and name in _input_error_names():
            return DissectError(message)
        return e
    return DissectError(
        f"pass {pass_no}: {text} (killed from outside, e.g. by the system for lack of memory); "
        "run the same command again to resume from the last checkpoint, with fewer "
        "--workers if memory is short"
    )


# ---------------------------------------------------------------------------- data loading
def loader(ds: Dataset, cfg: DissectConfig, device: torch.device) -> DataLoader:
    """The DataLoader of pass 1 (workers decode images; count: dissect.engine._resources)."""
    workers = workers_for_file_limit(choose_parallelism(cfg.threads, cfg.workers).workers, 16, 4)
    return batch_loader(ds, cfg.batch_size, workers, device, prefetch=4)


def _tally_loader(ds: TallyBatches, workers: int) -> Iterable[Batch]:
    """Pass 2's batches from ``ds`` (items are whole batches), ``workers`` processes; an item that
    carries an error raises it here, in the main process."""
    batches = DataLoader(
        ds,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
    for item in batches:
        if item.error is not None:
            raise item.error
        yield item


def _keep_label_parts(items: Iterable[Batch], parts: list) -> Iterable[Batch]:
    """The batches, each one's ``label_part`` (if any) moved to ``parts``."""
    for item in items:
        if item.label_part is not None:
            parts.append(item.label_part)
            item.label_part = None
        yield item


# ---------------------------------------------------------------------------- a run
def _maps_as_seen(maps: np.ndarray) -> np.ndarray:
    """Top-k maps [U, k, h, w] with the values the tally thresholded: float16 when that is lossless (a
    float16 cache), else float32, so the report's masks (map > T_k) are the counted masks."""
    half = maps.astype(np.float16)
    return half if np.array_equal(half.astype(maps.dtype), maps) else maps.astype(np.float32)


def load_saes(cfg: DissectConfig, shapes: dict, device: torch.device) -> dict:
    """{layer: SparseEncoder on ``device``} of ``cfg.sae``, each checked against its layer's unit count
    (shapes {layer: (U, h, w)}); raises DissectError for a layer not dissected or an unusable file."""
    out = {}
    for layer, path in cfg.sae or ():
        if layer not in shapes:
            raise DissectError(
                f"--sae names layer {layer!r}, which is not dissected here (layers: {', '.join(shapes)})"
            )
        try:
            out[layer] = load_sae(path, units=shapes[layer][0], layer=layer).to(device)
        except SAEError as e:
            raise DissectError(str(e)) from None
    return out


def _model_mark(m) -> Optional[tuple]:
    """What identifies a model record (result.json's ``model``, sae.json's ``model``) by content: the
    kind, name or function, source and weights digests (paths left out: a moved file is the same)."""
    if not isinstance(m, dict):
        return None
    if m.get("kind") == "activations":
        return ("activations", m.get("content") or m.get("fingerprint"))
    w = m.get("weights")
    w = w.get("sha256") if isinstance(w, dict) else w
    return ("model", m.get("kind"), m.get("name") or m.get("function"), m.get("sha256"), w, m.get("state_sha256"))


def _model_words(m: dict) -> str:
    """A model record in a few words: its spec or name or file, and its weights."""
    if m.get("kind") == "activations":
        return f"activations {m.get('file', '(array)')} ({str(m.get('content') or m.get('fingerprint'))[:12]})"
    w = m.get("weights")
    w = f"sha256 {str(w.get('sha256'))[:12]}" if isinstance(w, dict) else w
    name = m.get("spec") or m.get("name") or m.get("file") or m.get("class")
    return (
        f"model {name}"
        + (f" weights {w}" if w else "")
        + (f" ({m['state_sha256'][:12]})" if m.get("state_sha256") else "")
    )


def warn_sae_origin(saes: dict, key: dict, store_path: str = "") -> None:
    """One warning per --sae layer whose SAE (sae.json) was trained on another model or store than
    this run's (``key``: the run's checkpoint key, with ``model`` or ``source``+``content``, and
    ``store``); not an error: an SAE may be applied elsewhere on purpose. Records of another kind
    (activations against a model) and SAEs that record nothing (SAELens) are not compared."""
    run_model = key.get("model") or (dict(key["source"], content=key.get("content")) if "source" in key else None)
    for layer, enc in saes.items():
        rec = enc.record
        sae_m, run_m = _model_mark(rec.get("model")), _model_mark(run_model)
        if sae_m and run_m and sae_m[0] == run_m[0] and sae_m != run_m:
            log.warning(
                "--sae %s: the SAE %s was trained on %s, but this run dissects %s",
                layer,
                rec.get("path"),
                _model_words(rec["model"]),
                _model_words(run_model or {}),
            )
        fp = (rec.get("store") or {}).get("fingerprint") if isinstance(rec.get("store"), dict) else None
        if fp and key.get("store") and fp != key["store"]:
            log.warning(
                "--sae %s: the SAE %s was trained on store %s (fingerprint %s), but this run's store %s has "
                "fingerprint %s",
                layer,
                rec.get("path"),
                rec["store"].get("path"),
                fp[:12],
                store_path,
                str(key["store"])[:12],
            )


def _sae_key(cfg: DissectConfig) -> Optional[dict]:
    """What identifies the SAEs in checkpoint keys (their folders' weight files by bytes)."""
    if not cfg.sae:
        return None
    import hashlib

    key = {}
    for layer, path in cfg.sae:
        files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else [Path(path)]
        h = hashlib.sha256()
        for f in files:
            try:
                h.update(f.read_bytes())
            except OSError:
                h.update(str(f).encode())  # reported when the statistics load it
        key[layer] = h.hexdigest()
    return key


def _basis_key(cfg: DissectConfig) -> Optional[dict]:
    """What identifies the change of basis in checkpoint keys (a file by its bytes)."""
    if cfg.rotate is not None:
        return {"rotate": cfg.rotate}
    if cfg.basis is not None:
        import hashlib

        try:
            return {"basis": hashlib.sha256(Path(cfg.basis).read_bytes()).hexdigest()}
        except OSError:
            return {"basis": str(cfg.basis)}  # reported when the statistics load it
    return None


class Run:
    """One dissection's images, device, shard, working folder and checkpoint; raises DissectError.

    ``key`` identifies the input (model or activations); the run adds the data and settings to it.
    """

    def __init__(self, store: BrodenStore, cfg: DissectConfig, out: Optional[Union[str, Path]], key: dict):
        self.store, self.cfg = store, cfg
        self.parallel = choose_parallelism(cfg.threads, cfg.workers)
        apply_threads(self.parallel.threads)  # single-threaded ops on small tensors (dissect.engine._resources)
        self.info = dist_info()
        self.device = resolve_device(cfg.device, self.info)
        try:
            self.categories = check_categories(store, cfg.categories)
            self.rows = select_rows(store, cfg.split)
        except ValueError as e:
            raise DissectError(str(e)) from None
        sizes = {(store.rows[i].sh, store.rows[i].sw) for i in self.rows}
        if len(sizes) != 1:
            raise DissectError(
                f"{store.root / 'index.csv'}: images have different segmentation sizes {sorted(sizes)[:4]}"
            )
        self.seg_size = sizes.pop()
        start, stop = shard(len(self.rows), self.info)
        self.start, self.my_rows = start, self.rows[start:stop]
        self.out = Path(out) if out is not None else None
        self._tmp = tempfile.TemporaryDirectory(prefix="dissect-") if self.out is None else None
        self.work = self.out if self.out is not None else Path(self._tmp.name)
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.work / ".dissect_cache"
        self.key = dict(key, **self.recorded())  # the input, then every setting that decides the result
        self.key.update(
            rows=[start, stop],
            world=self.info.world,
            rank=self.info.rank,
            store=store.fingerprint(),
            version=__version__,
            basis=_basis_key(cfg),
            sae=_sae_key(cfg),
            statistics=sorted(LayerStatistics.SAVED),
        )  # a checkpoint without one of them starts over
        self.checkpoint = Checkpoint(
            self.out, self.key, self.info, cfg.checkpoint_every, quiet=cfg.quiet or self.info.rank != 0
        )
        self.timings: dict = {}
        self.null: dict = {}  # {layer: float64 [N, U]} each permutation's best IoUs (--null N)
        self.numbers, self.primary, self.names_by_number = label_columns(store, self.categories)

    def check_store_unchanged(self, cause: Optional[BaseException] = None) -> None:
        """DissectError when the store's tables differ from those this run began with (a store rebuilt
        or edited between pass 1 and pass 2: its label planes no longer match pass 1's thresholds)."""
        try:
            now = self.store.fingerprint()
        except OSError:
            now = None
        if now != self.key["store"]:
            why = f" ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})" if cause else ""
            raise DissectError(
                f"{self.store.root}: the store changed since this run began (rebuilt or edited between "
                f"pass 1 and pass 2){why}; run the command again"
            ) from None

    def recorded(self) -> dict:
        """The settings that decide the result (dissect.config.recorded), the categories as resolved."""
        return dict(recorded(self.cfg), categories=self.categories)

    def statistics(self, shapes: dict, state: Optional[dict]) -> Statistics:
        """Fresh statistics for layers of ``shapes`` {layer: (U, h, w)}, or those of a checkpoint."""
        if state is not None:
            shapes = {k: tuple(v) for k, v in state["shapes"].items()}
        tally_args = (self.numbers, self.categories, self.store.image_level_categories, self.primary)
        stats = Statistics(shapes, len(self.rows), self.cfg, tally_args, self.device)
        if self.info.rank == 0:
            warn_sae_origin(stats.saes, self.key, str(self.store.root.resolve()))
        if state is not None:
            note(
                f"resuming from {self.checkpoint.path} (pass {state['pass']}, batch {state['next_batch']} of "
                f"{self.n_batches()})",
                self.cfg.quiet or self.info.rank != 0,
            )
            stats.load_state_dict(state)
        return stats

    def n_batches(self) -> int:
        return -(-len(self.my_rows) // self.cfg.batch_size)

    def index_batches(self, positions: Sequence[int], start: int) -> Iterable[Batch]:
        """Pass-1 batches of this shard from batch ``start``: index.csv rows [B] and ``positions`` [B] in the array."""
        bs = self.cfg.batch_size
        for b in range(start, self.n_batches()):
            lo, hi = b * bs, min(len(self.my_rows), (b + 1) * bs)
            yield Batch(index=torch.tensor(self.my_rows[lo:hi], dtype=torch.long), positions=positions[lo:hi])

    def progress(self, desc: str, initial: int):
        from broden_builder.shared import progress

        return progress(
            total=self.n_batches(),
            initial=initial,
            desc=desc,
            unit="batch",
            per_unit=self.cfg.batch_size,
            quiet=self.cfg.quiet or self.info.rank != 0,
            leave=False,
        )

    def end_pass1(self, stats: Statistics, timing: str, t0: float) -> int:
        """Record pass 1's time, merge the thresholds across ranks, checkpoint; pass 2 starts at batch 0."""
        self.timings[timing] = time.perf_counter() - t0
        t1 = time.perf_counter()
        stats.sync_pass1(self.info)
        self.timings["merge_thresholds"] = time.perf_counter() - t1
        self.checkpoint.save(2, 0, stats)
        return 0

    def passes(
        self,
        stats: Statistics,
        state: Optional[dict],
        pass1: Callable[[int], str],
        sources: Callable[[], dict],
        positions: Sequence[int],
    ) -> None:
        """Both passes, resuming where the checkpoint ``state`` left off: ``pass1(start)`` feeds pass 1
        from batch ``start`` and returns its timing's name; the thresholds are merged over the ranks;
        pass 2 tallies ``sources()`` {layer: Activations} rows ``positions``."""
        if state is None or state["pass"] == 1:
            t0 = time.perf_counter()
            timing = pass1(state["next_batch"] if state else 0)
            start2 = self.end_pass1(stats, timing, t0)
        else:
            start2 = state["next_batch"]
        self.pass2(stats, sources(), positions, start2)

    def pass2(self, stats: Statistics, sources: dict, positions: Sequence[int], start: int) -> None:
        """Tally every layer: ``sources`` {layer: Activations} rows ``positions`` (this shard's, in order)."""
        t0 = time.perf_counter()
        stats.rescan_thresholds(sources, list(positions), self.cfg.batch_size, self.info)
        stats.start_pass2(self.seg_size)
        bs = self.cfg.batch_size
        labels = BrodenDataset(
            self.store, categories=self.categories, rows=self.my_rows[start * bs :], with_images=False
        )
        spec = None
        if self.device.type == "cpu":  # count in the workers; on an accelerator the main process counts
            spec = TallySpec(
                stats.tally_args,
                {n: t.cpu() for n, t in stats.thresholds.items()},
                self.cfg.upsample,
                tuple(self.seg_size),
                {n: b.cpu() for n, b in stats.bases.items()},
                label_runs=bool(self.cfg.null),
            )
        cache = None
        if self.cfg.label_cache:
            from broden_builder.shared import LabelCache

            cache = LabelCache(self.store, self.categories)
        ds = TallyBatches(
            labels,
            sources,
            positions[start * bs :],
            bs,
            known_label_table([l.number for l in self.store.labels]),
            spec,
            cache,
        )
        workers = self.parallel.tally_workers if spec is not None else self.parallel.workers
        parts: list = []  # the batches' labels as per-pixel combinations, kept for the null pass (--null)
        workers = workers_for_file_limit(workers, 8 + 4 * len(sources), 2)  # a batch: a few tensors per layer
        self.check_store_unchanged()
        try:
            run_pass(
                _keep_label_parts(_tally_loader(ds, workers), parts),
                lambda batch: batch.acts,
                stats,
                self.checkpoint,
                2,
                start,
                self.progress("pass 2/2 (tally)", start),
            )
        except (OSError, ValueError) as e:  # a file gone or different: say why when the store was replaced
            self.check_store_unchanged(e)
            raise
        t1 = time.perf_counter()
        stats.sync_counts(self.info)
        self.timings["pass2_tally"] = t1 - t0
        self.timings["reduce_counts"] = time.perf_counter() - t1
        if self.cfg.null:  # the permutation null of every layer (dissect.null_pass), from the summed tallies
            self.null = null_pass(self, stats, sources, list(positions), (self.start + start * bs, parts))

    def results(self, stats: Statistics, model_info: dict, settings_extra: dict) -> dict:
        """{layer: LayerResult} scored from the statistics."""
        t0 = time.perf_counter()
        cfg = self.cfg
        settings = dict(self.recorded(), world_size=self.info.world, parallelism=self.parallel.as_dict())
        settings.update(settings_extra)
        store_info = {
            "path": getattr(self.store, "spec", None) or str(self.store.root.resolve()),
            "fingerprint": self.store.fingerprint(),
            "images": len(self.rows),
            "segmentation_size": list(self.seg_size),
        }
        out = {}
        for n, layer in stats.layers.items():
            thr = layer.quantile.thresholds().cpu().numpy().astype(np.float32)
            tk = layer.topk.result()
            res = build_layer_result(
                n,
                layer.tally,
                cfg.union,
                cfg.iou_threshold,
                self.names_by_number,
                thr,
                settings=settings,
                model=model_info,
                store=store_info,
                timings=dict(self.timings),
                version=__version__,
                topk=(
                    tk["indices"].numpy().astype(np.int64),
                    tk["values"].numpy().astype(np.float32),
                    _maps_as_seen(tk["maps"].numpy()),
                ),
                null=self.null.get(n),
                alpha=cfg.alpha,
                detector=cfg.detector,
                constant=(layer.range.constant().numpy(), layer.range.values().numpy()),
                predicted=predicted_label_models(getattr(self.store, "build_info", None)),
            )
            res.settings["layer_shape"] = list(stats.shapes[n])
            if n in stats.basis_records:
                res.settings["basis"] = stats.basis_records[n]
            res.settings["dissected"] = "feature" if n in stats.saes else "unit"
            if n in stats.saes:
                res.settings["sae"] = dict(
                    stats.saes[n].record, features=stats.saes[n].features, units=stats.shapes[n][0]
                )
            out[n] = res
        for res in out.values():
            res.timings["score"] = time.perf_counter() - t0
            log.info("%s", res.summary_line())
        return out

    def finish(self) -> None:
        """After the last pass: drop the checkpoint (all ranks done) and the temporary folder."""
        barrier()
        self.checkpoint.remove()
        if self._tmp is not None:
            self._tmp.cleanup()


def finish_results(
    results: Iterable[LayerResult], out: Optional[Union[str, Path]], info: DistInfo, t_start: float
) -> None:
    """Record the total time and, on rank 0, write every result to ``out/<layer>/``."""
    total = time.perf_counter() - t_start
    for r in results:
        r.timings["total"] = total
        if out is not None and info.rank == 0:
            write_layer_result(layer_folder(out, r.layer, feature=r.what == "feature"), r)
