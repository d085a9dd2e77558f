"""Run a network over a Broden store and score its units: the function-level API.

``dissect_model(model, layers, store, config, out)`` does everything in one pass over the images
for all requested layers:

1. pass 1 runs the model once per batch, rounds each layer's output to the cache dtype, writes it
   to a compact on-disk cache (numpy memmap, keyed by model, weights, layer, input size,
   preprocessing and store fingerprint; see dissect.cache) and feeds TopQuantile + TopKImages;
2. the threshold statistics of all ranks are merged exactly (torch.distributed all_gather);
3. pass 2 reads the cache together with the store's label planes (DataLoader workers),
   upsamples and feeds Tally; counts are all-reduced; rank 0 writes ``out/<layer>/``.

``score_activations(acts, store, config, out, name)`` does the same for activations computed
elsewhere ([N, U, h, w] in index.csv order). The state is checkpointed every
``config.checkpoint_every`` batches under ``out/.dissect_state/``; rerunning the same command
resumes and gives the identical result. Memory does not grow with the number of images (only
the exact top-quantile lists, ceil(quantile * N * h * w) + 1 values per unit, do).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from broden_builder.store.atomic import atomic_write_bytes
from broden_builder.store.reader import BrodenStore
from broden_builder.torch_dataset import (IMAGENET_MEAN, IMAGENET_STD, BrodenDataset, check_categories,
                                          collate_broden, select_rows)

from . import __version__
from .cache import ActivationCache, NpyRows, safe_name
from .distributed import DistInfo, all_reduce_sum_, barrier, dist_info, gather_states, shard
from .hooks import as_feature_map, get_layer, output_layers, run_layers
from .models import LoadedModel
from .outputs import build_layer_result, write_layer_result
from .results import LayerResult
from .stats import UNIONS, Tally, TopKImages, TopQuantile

log = logging.getLogger(__name__)

STATE_DIR = ".dissect_state"
FAULT_ENV = "DISSECT_FAULT_AFTER"  # tests: "<pass>:<batch>" -> hard exit after that batch


class DissectError(ValueError):
    """Bad input to a dissection (activations, layers, categories, model); the message says which."""


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class DissectConfig:
    """Settings of one dissection (no global state). Sizes are (H, W)."""

    quantile: float = 0.005
    iou_threshold: float = 0.04
    union: str = "original"  # 'original' | 'lite' | 'all'
    categories: Optional[tuple] = None  # None = every category of the store
    top_k: int = 10
    split: Optional[str] = None
    input_size: Optional[tuple] = None  # None = the store's image size
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    upsample: str = "bilinear"
    batch_size: int = 32
    workers: int = field(default_factory=default_workers)
    device: str = "auto"  # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    checkpoint_every: int = 50  # batches; 0 = never
    cache_dtype: str = "float16"  # activations are rounded to this before every statistic
    cache_dir: Optional[str] = None  # None = out/.dissect_cache (removed after success)
    keep_cache: bool = False
    quiet: bool = False

    def __post_init__(self):
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile must lie in (0, 1), got {self.quantile}")
        if self.union not in UNIONS:
            raise ValueError(f"union must be one of {UNIONS}, got {self.union!r}")
        if self.top_k < 1 or self.batch_size < 1 or self.workers < 0 or self.checkpoint_every < 0:
            raise ValueError("top_k and batch_size must be >= 1, workers and checkpoint_every >= 0")
        if self.cache_dtype not in ("float16", "float32"):
            raise ValueError(f"cache_dtype must be float16 or float32, got {self.cache_dtype!r}")
        if isinstance(self.input_size, int):
            object.__setattr__(self, "input_size", (self.input_size, self.input_size))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(self.categories))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))

    def replace(self, **changes) -> "DissectConfig":
        from dataclasses import replace

        return replace(self, **changes)


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DissectError("--device cuda was asked for but no CUDA device is available")
        if spec == "cuda":
            return torch.device("cuda", info.local_rank if info.active else torch.cuda.current_device())
    return torch.device(spec)


# ---------------------------------------------------------------------------- data
class _ActsDataset(Dataset):
    """Labels of shard rows plus each layer's activation row, read from arrays or .npy files."""

    def __init__(self, labels: BrodenDataset, sources: dict, positions: Sequence[int]):
        self.labels = labels
        self.sources = sources  # layer -> path (str) or array-like indexed by position
        self.positions = list(positions)
        self._open: dict = {}

    def __len__(self) -> int:
        return len(self.positions)

    def _array(self, layer):
        src = self.sources[layer]
        if isinstance(src, str):
            if layer not in self._open:
                self._open[layer] = NpyRows(src)
            return self._open[layer]
        return src

    def __getitem__(self, k: int) -> dict:
        item = self.labels[k]
        p = self.positions[k]
        item["acts"] = {layer: torch.from_numpy(np.array(self._array(layer)[p], dtype=np.float32))
                        for layer in self.sources}
        return item

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_open"] = {}
        return d


def _loader(ds: Dataset, cfg: DissectConfig, device: torch.device) -> DataLoader:
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                      collate_fn=collate_broden, pin_memory=device.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if cfg.workers else None)


# ---------------------------------------------------------------------------- checks
def check_finite(name: str, acts: torch.Tensor, rows: Sequence[int], store: BrodenStore, what: str = "") -> None:
    """Raise DissectError naming the layer, unit and image when ``acts`` holds NaN or inf."""
    if bool(torch.isfinite(acts).all()):
        return
    bad = (~torch.isfinite(acts)).flatten(2).any(2)  # [B, U]
    b, u = (int(x) for x in bad.nonzero()[0])
    kind = "NaN" if bool(torch.isnan(acts[b, u]).any()) else "inf"
    units = bad.any(0).nonzero().flatten().tolist()
    row = int(rows[b])
    raise DissectError(
        f"{what}layer {name!r}: unit {u} (0-based) has {kind} activations on index.csv row {row + 1} "
        f"({store.rows[row].image}); {len(units)} unit(s) are affected: {units[:10]}{' ...' if len(units) > 10 else ''}")


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


def _model_identity(model) -> tuple:
    if isinstance(model, LoadedModel):
        return model, dict(model.identity, spec=model.spec)
    if not isinstance(model, nn.Module):
        raise DissectError(f"model must be an nn.Module or LoadedModel, got {type(model).__name__}")
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16 else v.float().numpy().tobytes())
    kind = "torchscript" if isinstance(model, torch.jit.ScriptModule) else "module"
    lm = LoadedModel(model, type(model).__name__, kind)
    return lm, {"kind": kind, "class": f"{type(model).__module__}.{type(model).__qualname__}", "state_sha256": h.hexdigest()}


# ---------------------------------------------------------------------------- engine
class _Engine:
    """The two passes shared by dissect_model and score_activations."""

    def __init__(self, store: BrodenStore, cfg: DissectConfig, out: Optional[Path], names: list, key: dict):
        self.store, self.cfg, self.names = store, cfg, names
        self.info = dist_info()
        self.device = resolve_device(cfg.device, self.info)
        try:
            self.categories = check_categories(store, cfg.categories)
            self.rows = select_rows(store, cfg.split)
        except ValueError as e:
            raise DissectError(str(e)) from None
        sizes = {(store.rows[i].sh, store.rows[i].sw) for i in self.rows}
        if len(sizes) != 1:
            raise DissectError(f"{store.root / 'index.csv'}: images have different segmentation sizes {sorted(sizes)[:4]}")
        self.seg_size = sizes.pop()
        start, stop = shard(len(self.rows), self.info)
        self.start, self.my_rows = start, self.rows[start:stop]
        self.out = Path(out) if out is not None else None
        self._tmp = None
        if self.out is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dissect-")
            self.work = Path(self._tmp.name)
        else:
            self.work = self.out
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.work / ".dissect_cache"
        self.key = dict(key, rows=[start, stop], world=self.info.world, rank=self.info.rank,
                        categories=self.categories, split=cfg.split, quantile=cfg.quantile, top_k=cfg.top_k,
                        batch_size=cfg.batch_size, cache_dtype=cfg.cache_dtype, upsample=cfg.upsample,
                        store=store.fingerprint(), version=__version__)
        self.key_text = json.dumps(self.key, sort_keys=True, default=str)
        self.ckpt_path = self.work / STATE_DIR / f"rank{self.info.rank}of{self.info.world}.pt"
        self.timings: dict = {}
        self.shapes: dict = {}
        self.tq: dict = {}
        self.topk: dict = {}
        self.tally: dict = {}
        self.numbers, self.primary, self.names_by_number = label_columns(store, self.categories)
        fault = os.environ.get(FAULT_ENV, "")
        self.fault = tuple(int(x) for x in fault.split(":")) if fault else None

    # -------------------------------------------------------------- stats objects
    def init_stats(self, shapes: dict) -> None:
        self.shapes = {k: tuple(int(x) for x in v) for k, v in shapes.items()}
        n = len(self.rows)
        for name, (u, h, w) in self.shapes.items():
            self.tq[name] = TopQuantile(u, self.cfg.quantile, n * h * w, self.device)
            self.topk[name] = TopKImages(u, self.cfg.top_k, self.device)
            self.tally[name] = Tally(self.numbers, self.categories, self.store.image_level_categories,
                                     self.primary, self.device, units=u)

    def feed_pass1(self, acts: dict, idx: torch.Tensor) -> None:
        rows = idx.tolist()
        for name in self.names:
            a = acts[name]
            check_finite(name, a, rows, self.store)
            a = a.to(self.device, non_blocking=True).float()
            self.tq[name].add(a)
            self.topk[name].add(a, idx.to(self.device))

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self, pass_no: int, next_batch: int) -> None:
        if self.out is None or self.cfg.checkpoint_every == 0:
            return
        state = {"key": self.key_text, "pass": pass_no, "next_batch": next_batch,
                 "shapes": {k: list(v) for k, v in self.shapes.items()},
                 "layers": {n: {"tq": self.tq[n].state_dict(), "topk": self.topk[n].state_dict(),
                                "tally": self.tally[n].state_dict()} for n in self.names}}
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.ckpt_path, buf.getvalue())

    def load_checkpoint(self) -> Optional[dict]:
        if self.out is None or not self.ckpt_path.is_file():
            return None
        try:
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: start over
            log.warning("cannot read checkpoint %s (%s); starting over", self.ckpt_path, e)
            return None
        if state.get("key") != self.key_text or set(state.get("layers", {})) != set(self.names):
            log.warning("checkpoint %s was made with different settings, model, data or store; starting over",
                        self.ckpt_path)
            return None
        return state

    def restore(self, state: dict) -> None:
        self.init_stats({k: tuple(v) for k, v in state["shapes"].items()})
        for n in self.names:
            self.tq[n].load_state_dict(state["layers"][n]["tq"])
            self.topk[n].load_state_dict(state["layers"][n]["topk"])
            self.tally[n].load_state_dict(state["layers"][n]["tally"])

    def agree_on_resume(self, state: Optional[dict]) -> Optional[dict]:
        """All ranks resume only if all hold a checkpoint of the same pass (else all start over)."""
        if not self.info.active:
            return state
        phases = gather_states({"pass": state["pass"] if state else 0}, self.info)
        if len({p["pass"] for p in phases}) != 1:
            log.warning("ranks hold checkpoints of different passes; starting over")
            return None
        return state

    def after_batch(self, pass_no: int, b: int) -> None:
        every = self.cfg.checkpoint_every
        if every and (b + 1) % every == 0:
            for c in getattr(self, "caches", {}).values():
                c.flush()
            self.save_checkpoint(pass_no, b + 1)
        if self.fault and self.fault == (pass_no, b + 1):
            os._exit(75)  # simulated kill (tests)

    def n_batches(self) -> int:
        return -(-len(self.my_rows) // self.cfg.batch_size)

    def progress(self, desc: str, initial: int):
        from tqdm import tqdm

        return tqdm(total=self.n_batches(), initial=initial, desc=desc, unit="batch",
                    disable=self.cfg.quiet or self.info.rank != 0, leave=False)

    # -------------------------------------------------------------- merge + pass 2
    def merge_thresholds(self) -> None:
        t0 = time.perf_counter()
        if self.info.active:
            states = gather_states({n: {"tq": self.tq[n].state_dict(), "topk": self.topk[n].state_dict()}
                                    for n in self.names}, self.info)
            for n in self.names:
                u, h, w = self.shapes[n]
                tq = TopQuantile(u, self.cfg.quantile, len(self.rows) * h * w, self.device)
                tk = TopKImages(u, self.cfg.top_k, self.device)
                for s in states:
                    tq.merge(TopQuantile.from_state_dict(s[n]["tq"], self.device))
                    other = TopKImages(u, self.cfg.top_k, self.device)
                    other.load_state_dict(s[n]["topk"])
                    tk.merge(other)
                self.tq[n], self.topk[n] = tq, tk
        self.timings["merge_thresholds"] = time.perf_counter() - t0

    def end_pass1(self, timing: str, t0: float) -> int:
        """Record pass 1's time, merge the thresholds across ranks, checkpoint; pass 2 starts at batch 0."""
        self.timings[timing] = time.perf_counter() - t0
        self.merge_thresholds()
        self.save_checkpoint(2, 0)
        return 0

    def pass2(self, sources: dict, positions: Sequence[int], start_batch: int) -> None:
        t0 = time.perf_counter()
        thr = {n: self.tq[n].thresholds().to(self.device, torch.float32) for n in self.names}
        bs = self.cfg.batch_size
        labels = BrodenDataset(self.store, categories=self.categories, rows=self.my_rows[start_batch * bs:],
                               with_images=False)
        ds = _ActsDataset(labels, sources, positions[start_batch * bs:])
        bar = self.progress("pass 2/2 (tally)", start_batch)
        b = start_batch
        for batch in _loader(ds, self.cfg, self.device):
            seg = batch["seg"].to(self.device)
            for n in self.names:
                a = batch["acts"][n].to(self.device, non_blocking=True)
                # upsamples only the tiles where the mask can be set: the counts of add(upsample(a))
                self.tally[n].add_activations(a, thr[n], seg, mode=self.cfg.upsample, size=self.seg_size)
            self.after_batch(2, b)
            b += 1
            bar.update(1)
        bar.close()
        t1 = time.perf_counter()
        for n in self.names:
            t = self.tally[n]
            all_reduce_sum_([t.I, t.G, t.A_original, t.A_lite, t.A_all], self.device)
            if self.info.active:
                images = torch.tensor([t.images], dtype=torch.long)
                all_reduce_sum_([images], self.device)
                t.images = int(images.item())
        self.timings["pass2_tally"] = t1 - t0
        self.timings["reduce_counts"] = time.perf_counter() - t1

    def results(self, model_info: dict, settings_extra: dict) -> dict:
        t0 = time.perf_counter()
        cfg = self.cfg
        settings = {"quantile": cfg.quantile, "iou_threshold": cfg.iou_threshold, "union": cfg.union,
                    "upsample": cfg.upsample, "categories": self.categories, "split": cfg.split, "top_k": cfg.top_k,
                    "mean": list(cfg.mean), "std": list(cfg.std), "cache_dtype": cfg.cache_dtype,
                    "batch_size": cfg.batch_size, "world_size": self.info.world}
        settings.update(settings_extra)
        store_info = {"path": str(self.store.root.resolve()), "fingerprint": self.store.fingerprint(),
                      "images": len(self.rows), "segmentation_size": list(self.seg_size)}
        out = {}
        for n in self.names:
            thr = self.tq[n].thresholds().cpu().numpy().astype(np.float32)
            tk = self.topk[n].result()
            res = build_layer_result(
                n, self.tally[n], cfg.union, cfg.iou_threshold, self.names_by_number, thr, settings=settings,
                model=model_info, store=store_info, timings=dict(self.timings), version=__version__,
                topk=(tk["indices"].numpy().astype(np.int64), tk["values"].numpy().astype(np.float32),
                      tk["maps"].numpy().astype(np.float16)))
            res.settings["layer_shape"] = list(self.shapes[n])
            out[n] = res
        for n, res in out.items():
            res.timings["score"] = time.perf_counter() - t0
            log.info("%s", res.summary_line())
        return out

    def finish(self) -> None:
        barrier()
        if self.out is not None:
            try:
                self.ckpt_path.unlink()
            except FileNotFoundError:
                pass
            try:
                (self.work / STATE_DIR).rmdir()
            except OSError:
                pass
        if self._tmp is not None:
            self._tmp.cleanup()


# ---------------------------------------------------------------------------- public API
def _forward(lm: LoadedModel, x: torch.Tensor, names: Sequence[str]) -> dict:
    if lm.is_torchscript:
        with torch.no_grad():
            outs = output_layers(lm.module(x))
        return {n: as_feature_map(n, outs[n]) for n in names}
    outs = run_layers(lm.module, x, names)
    return {n: as_feature_map(n, outs[n]) for n in names}


def _check_layers(lm: LoadedModel, names: Sequence[str], probe_out=None) -> None:
    if lm.is_torchscript:
        return
    for n in names:
        get_layer(lm.module, n)


def _open_store(store) -> BrodenStore:
    return store if isinstance(store, BrodenStore) else BrodenStore(store)


def dissect_model(model: Union[nn.Module, LoadedModel], layers: Union[str, Sequence[str]],
                  store: Union[BrodenStore, str, Path], config: DissectConfig = DissectConfig(),
                  out: Optional[Union[str, Path]] = None) -> dict:
    """Dissect ``layers`` of ``model`` on ``store``; returns {layer: LayerResult}.

    When ``out`` is given, rank 0 writes ``out/<layer>/`` and the run checkpoints (and resumes)
    under ``out``. Raises DissectError for bad input and UnknownLayerError for unknown layers.
    """
    t_start = time.perf_counter()
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise DissectError("no layer to dissect")
    store = _open_store(store)
    lm, identity = _model_identity(model)
    cfg = config
    _check_layers(lm, names)
    r0 = store.rows[0] if store.rows else None
    if r0 is None:
        raise DissectError(f"{store.root / 'index.csv'} has no images")
    input_size = tuple(cfg.input_size) if cfg.input_size else (r0.ih, r0.iw)
    key = {"model": identity, "layers": names, "input_size": list(input_size), "mean": list(cfg.mean),
           "std": list(cfg.std)}
    eng = _Engine(store, cfg, out, names, key)
    dev = eng.device
    lm.module.to(dev).eval()

    # probe: the model must run at this input size, and every layer must give [B, U, h, w]
    try:
        probe = _forward(lm, torch.zeros(1, 3, *input_size, device=dev), names)
    except (DissectError, KeyError):
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DissectError(f"model {lm.spec} fails on input size {input_size[0]}x{input_size[1]}: "
                           f"{type(e).__name__}: {msg} (choose another --input-size)") from None
    shapes = {n: tuple(probe[n].shape[1:]) for n in names}

    layer_keys = {n: dict(key, layer=n, shape=list(shapes[n]), rows=eng.key["rows"], split=cfg.split,
                          store=eng.key["store"], dtype=cfg.cache_dtype) for n in names}
    for n in names:
        layer_keys[n].pop("layers", None)
    eng.caches = {n: ActivationCache(eng.cache_dir, f"{safe_name(n)}.rank{eng.info.rank}of{eng.info.world}",
                                     layer_keys[n]) for n in names}
    state = eng.load_checkpoint()
    if state is not None and state["pass"] == 1 and not all(c.matches(require_complete=False) for c in eng.caches.values()):
        state = None  # the cache the checkpoint relies on is gone or different
    if state is not None and state["pass"] == 2 and not all(c.matches(require_complete=True) for c in eng.caches.values()):
        state = None
    state = eng.agree_on_resume(state)  # after the local checks: every rank resumes, or none does
    if state is not None:
        log.info("resuming from %s (pass %d, batch %d)", eng.ckpt_path, state["pass"], state["next_batch"])
        eng.restore(state)
    else:
        eng.init_stats(shapes)
    eng.timings["setup"] = time.perf_counter() - t_start

    # pass 1: model -> cache + threshold statistics
    t0 = time.perf_counter()
    n_rows = len(eng.my_rows)
    if state is None or state["pass"] == 1:
        start_b = state["next_batch"] if state else 0
        cached = state is None and all(c.matches(require_complete=True) for c in eng.caches.values())
        arrays = {n: eng.caches[n].create((n_rows,) + shapes[n], cfg.cache_dtype) if not cached
                  else eng.caches[n].open_read() for n in names}
        bs = cfg.batch_size
        bar = eng.progress("pass 1/2 (activations)" if not cached else "pass 1/2 (cached activations)", start_b)
        if cached:
            log.info("reusing the activation cache in %s (key matches)", eng.cache_dir)
            for b in range(start_b, eng.n_batches()):
                lo, hi = b * bs, min(n_rows, (b + 1) * bs)
                idx = torch.tensor(eng.my_rows[lo:hi], dtype=torch.long)
                eng.feed_pass1({n: torch.from_numpy(np.array(arrays[n][lo:hi], dtype=np.float32)) for n in names}, idx)
                eng.after_batch(1, b)
                bar.update(1)
        else:
            ds = BrodenDataset(store, rows=eng.my_rows[start_b * bs:], image_size=input_size, mean=cfg.mean,
                               std=cfg.std, with_labels=False)
            tdt = torch.float16 if cfg.cache_dtype == "float16" else torch.float32
            b = start_b
            for batch in _loader(ds, cfg, dev):
                x = batch["image"].to(dev, non_blocking=True)
                idx = batch["index"]
                lo = b * bs
                feats = _forward(lm, x, names)
                rounded = {}
                for n in names:
                    a = feats[n]
                    check_finite(n, a, idx.tolist(), store)
                    r = a.to(tdt)
                    if not bool(torch.isfinite(r).all()):
                        raise DissectError(f"layer {n!r}: activations exceed the float16 range of the cache "
                                           f"(max |a| = {a.abs().max().item():.4g}); use --cache-dtype float32")
                    arrays[n][lo:lo + r.shape[0]] = r.cpu().numpy()
                    rounded[n] = r
                eng.feed_pass1(rounded, idx)
                eng.after_batch(1, b)
                b += 1
                bar.update(1)
            for c in eng.caches.values():
                c.mark_complete()
        bar.close()
        start2 = eng.end_pass1("pass1_activations", t0)
    else:
        start2 = state["next_batch"]

    sources = {n: str(eng.caches[n].path) for n in names}
    eng.pass2(sources, list(range(n_rows)), start2)
    model_info = dict(identity)
    results = eng.results(model_info, {"input_size": list(input_size)})
    eng.finish()
    if not (cfg.keep_cache or cfg.cache_dir):
        for c in eng.caches.values():
            c.remove()
        try:
            eng.cache_dir.rmdir()
        except OSError:
            pass
    total = time.perf_counter() - t_start
    for r in results.values():
        r.timings["total"] = total
        if out is not None and eng.info.rank == 0:
            write_layer_result(Path(out) / safe_name(r.layer), r)
    return results


def load_activations(path: Union[str, Path]):
    """A .npy file (read by rows, not loaded) or a .pt file (a tensor, or a dict holding one) as an array-like."""
    path = Path(path)
    if not path.is_file():
        raise DissectError(f"activation file {path} does not exist")
    if path.suffix == ".npy":
        try:
            return NpyRows(path)
        except ValueError as e:
            try:
                return np.load(path, mmap_mode="r")  # e.g. a Fortran-ordered array
            except ValueError:
                raise DissectError(f"{path}: cannot read as a .npy array ({e})") from None
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise DissectError(f"{path}: cannot load a tensor ({type(e).__name__}: {e})") from None
        if isinstance(obj, dict):
            tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
            if len(tensors) != 1:
                raise DissectError(f"{path}: holds a dict with {len(tensors)} tensors; expected one tensor")
            obj = tensors[0]
        if not isinstance(obj, torch.Tensor):
            raise DissectError(f"{path}: holds {type(obj).__name__}, not a tensor")
        return obj.float().numpy() if obj.dtype in (torch.bfloat16,) else obj.numpy()
    raise DissectError(f"{path}: activations must be a .npy or .pt file")


def content_fingerprint(activations, path: Optional[str] = None, samples: int = 16) -> str:
    """A cheap identity of an activation array for resume keys: shape, dtype, evenly spaced sample
    rows and, for a file, its size and modification time (a checkpoint of other data is never resumed)."""
    h = hashlib.sha256(f"{tuple(activations.shape)}|{np.dtype(activations.dtype).str}".encode())
    n = int(activations.shape[0])
    for i in sorted({int(round(k * (n - 1) / max(1, samples - 1))) for k in range(samples)} if n else ()):
        h.update(np.ascontiguousarray(np.asarray(activations[i])).tobytes())
    if path:
        st = os.stat(path)
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def score_activations(activations, store: Union[BrodenStore, str, Path], config: DissectConfig = DissectConfig(),
                      out: Optional[Union[str, Path]] = None, name: str = "activations") -> LayerResult:
    """Score activations computed elsewhere: [N, U, h, w] (or [N, U]) in index.csv order.

    N is the number of index.csv rows, or, with ``config.split``, either that or the number of
    rows in the split (then in split order). ``activations`` is an array, tensor, or a .npy/.pt
    path (.npy is memory-mapped). Results go to ``out/<name>/`` when ``out`` is given.
    """
    t_start = time.perf_counter()
    store = _open_store(store)
    origin = "activations"
    source_info: dict = {"kind": "activations"}
    if isinstance(activations, (str, Path)):
        origin = str(activations)
        source_info["file"] = str(Path(activations).resolve())
        activations = load_activations(activations)
    if isinstance(activations, torch.Tensor):
        activations = activations.detach().cpu().numpy()
    if not hasattr(activations, "shape") or not hasattr(activations, "__getitem__"):
        raise DissectError(f"{origin}: expected an array of shape [N, units, h, w], got {type(activations).__name__}")
    shape = tuple(activations.shape)
    if len(shape) == 2:
        activations = activations.reshape(shape + (1, 1))
        shape = shape + (1, 1)
    if len(shape) != 4:
        raise DissectError(f"{origin}: activations have shape {shape}; expected [N, units, h, w] (or [N, units])")
    if not np.issubdtype(np.dtype(activations.dtype), np.floating):
        raise DissectError(f"{origin}: activations have dtype {activations.dtype}; expected floating point")
    cfg = config
    eng_key = {"source": source_info, "shape": list(shape), "name": name,
               "content": content_fingerprint(activations, source_info.get("file"))}
    eng = _Engine(store, cfg, out, [name], eng_key)
    n_all, n_split = len(store.rows), len(eng.rows)
    if shape[0] == n_all:
        positions_all = list(eng.rows)  # array row = index.csv row
    elif cfg.split is not None and shape[0] == n_split:
        positions_all = list(range(n_split))
    else:
        extra = f" or the {n_split} rows of split {cfg.split!r}" if cfg.split else ""
        raise DissectError(f"{origin}: activations hold {shape[0]} images but {store.root / 'index.csv'} has "
                           f"{n_all} rows{extra}; activations must be in index.csv order")
    if shape[1] < 1 or shape[2] < 1 or shape[3] < 1:
        raise DissectError(f"{origin}: activations have an empty dimension in shape {shape}")
    positions = positions_all[eng.start: eng.start + len(eng.my_rows)]
    state = eng.agree_on_resume(eng.load_checkpoint())
    if state is not None:
        eng.restore(state)
    else:
        eng.init_stats({name: shape[1:]})
    eng.timings["setup"] = time.perf_counter() - t_start
    if state is None or state["pass"] == 1:
        t0 = time.perf_counter()
        start_b = state["next_batch"] if state else 0
        bs = cfg.batch_size
        bar = eng.progress("pass 1/2 (thresholds)", start_b)
        for b in range(start_b, eng.n_batches()):
            lo, hi = b * bs, min(len(positions), (b + 1) * bs)
            pos = positions[lo:hi]
            chunk = np.array(activations[pos[0]: pos[-1] + 1] if pos == list(range(pos[0], pos[-1] + 1))
                               else activations[pos], dtype=np.float32)
            idx = torch.tensor(eng.my_rows[lo:hi], dtype=torch.long)
            eng.feed_pass1({name: torch.from_numpy(chunk)}, idx)
            eng.after_batch(1, b)
            bar.update(1)
        bar.close()
        start2 = eng.end_pass1("pass1_thresholds", t0)
    else:
        start2 = state["next_batch"]
    src = source_info.get("file") if source_info.get("file", "").endswith(".npy") else activations
    eng.pass2({name: src}, positions, start2)
    res = eng.results(dict(source_info), {"input_size": None})[name]
    eng.finish()
    res.timings["total"] = time.perf_counter() - t_start
    if out is not None and eng.info.rank == 0:
        write_layer_result(Path(out) / safe_name(name), res)
    return res
