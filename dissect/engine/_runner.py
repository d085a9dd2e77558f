"""Run a network over a Broden store and score its units: the two entry points.

``dissect_model(model, layers, store, config, out)`` does everything in one pass over the images
for all requested layers:

1. pass 1 runs the model once per batch, rounds each layer's output to the cache dtype, writes it
   to a compact on-disk cache (keyed by model, weights, layer, input size, preprocessing and store
   fingerprint; see dissect.engine._cache) and feeds TopQuantile + TopKImages;
2. the threshold statistics of all ranks are merged exactly;
3. pass 2 reads the cache together with the store's label planes (DataLoader workers),
   upsamples and feeds Tally; counts are summed over ranks; rank 0 writes ``out/<layer>/``.

``score_activations(acts, store, config, out, name)`` does the same for activations computed
elsewhere ([N, U, h, w] or [N, U] in index.csv order). Both run the engine's passes (dissect.engine._passes); they
differ in the ``compute`` function of pass 1. The state is checkpointed every
``config.checkpoint_every`` batches under ``out/.dissect_state/`` (dissect.engine._checkpoint); rerunning
the same command resumes and gives the identical result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from broden_builder import BrodenError, BrodenStore
from broden_builder.torch_dataset import BrodenDataset

from ._activations import check_finite, open_activations
from ._cache import ActivationCache
from ..config import DissectConfig
from ._passes import Run, finish_results, loader, run_pass
from ._tally_batches import Batch
from ..errors import DissectError
from ..capture import resolve_selector
from ._model_input import ModelForward, cache_rounded, loaded_model, plan_model
from ._resources import apply_threads
from ..capture import LoadedModel, model_record
from ..capture import Preprocessing, resolve_preprocessing
from ..results import LayerResult, safe_name

log = logging.getLogger(__name__)


def _lock_verdict(refusal, info) -> None:
    """Share rank 0's --out lock verdict with every rank (all nodes of a multi-node job): ``""`` when
    rank 0 holds the lock, else its refusal, which every other rank raises too instead of waiting in
    a collective for a rank 0 that has stopped. Rank 0 passes its verdict; the others pass None."""
    if not info.active:
        return
    import torch.distributed as dist

    box = [refusal]
    dist.broadcast_object_list(box, src=0)
    if info.rank != 0 and box[0]:
        raise DissectError(f"rank 0 could not take the output folder: {box[0]}")


def _holding_out_lock(fn):
    """Run ``fn`` holding the exclusive lock of its ``out`` folder (rank 0; results.results_lock),
    after sweeping what killed writers left there. A second writer is refused with the holder's PID."""
    import functools
    import inspect

    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from broden_builder.shared import progress_to

        bound = sig.bind(*args, **kwargs).arguments
        out, config = bound.get("out"), bound.get("config") or DissectConfig()
        with progress_to(config.progress):  # the Python API's callback or logger (DissectConfig.progress)
            if out is None:
                return fn(*args, **kwargs)
            return _locked(fn, out, args, kwargs)

    return wrapper


def _locked(fn, out, args, kwargs):
    """``fn(*args, **kwargs)`` holding the lock of ``out`` on rank 0 (results.results_lock); every
    other rank waits for rank 0's verdict and stops with it on a refusal."""
    from ..results import results_lock
    from ._distributed import dist_info

    info = dist_info()
    if info.rank != 0:
        _lock_verdict(None, info)  # rank 0's verdict: every rank of every node stops on a refusal
        return fn(*args, **kwargs)
    entered = False
    try:
        with results_lock(out, f"dissect {fn.__name__}"):
            entered = True
            _lock_verdict("", info)
            return fn(*args, **kwargs)
    except (DissectError, BrodenError) as e:
        if not entered:
            _lock_verdict(str(e), info)
        raise


def _model_key(identity: dict, names: list, prep: Preprocessing, layout, config: DissectConfig) -> dict:
    """The run's input as the checkpoint and cache keys see it: the model, its layers, the
    preprocessing as resolved and the layout."""
    key = {
        "model": identity,
        "layers": names,
        "input_size": list(prep.input_size),
        "mean": list(config.mean),
        "std": list(config.std),
        "layout": layout,
    }
    if prep.transform is not None:  # mean/std/input size are in the key already; a transform is not
        key["transform"] = prep.record["transform"]
    return key


def _model_pass1(run: Run, lm: LoadedModel, plans: dict, prep: Preprocessing, caches: dict, stats, state):
    """Pass 1 of dissect_model from batch ``start``: the model (or a complete activation cache) ->
    the cache + the threshold statistics; returns the timing's name."""
    shapes = {n: p.shape for n, p in plans.items()}
    input_size, config = prep.input_size, run.cfg

    def pass1(start: int) -> str:  # the model -> the cache + the threshold statistics
        cached = state is None and all(c.matches(require_complete=True) for c in caches.values())
        if cached:
            log.info("reusing the activation cache in %s (key matches)", run.cache_dir)
            arrays = {n: c.open_read() for n, c in caches.items()}
            compute = lambda batch: _read_rows(run, arrays, batch)
            batches, desc = run.index_batches(range(len(run.my_rows)), start), "pass 1/2 (cached activations)"
        else:
            arrays = {n: caches[n].create((len(run.my_rows),) + shapes[n], config.cache_dtype) for n in plans}
            compute = _model_compute(run, lm, plans, prep, arrays, start)
            batches, desc = loader(_images(run, input_size, start), config, run.device), "pass 1/2 (activations)"
        run_pass(batches, compute, stats, run.checkpoint, 1, start, run.progress(desc, start))
        for c in caches.values() if not cached else ():
            c.mark_complete()
        return "pass1_activations"

    return pass1


@_holding_out_lock
def dissect_model(
    model: Union[nn.Module, LoadedModel],
    layers: Union[str, Sequence[str]],
    store: Union[BrodenStore, str, Path],
    config: DissectConfig = DissectConfig(),
    out: Optional[Union[str, Path]] = None,
) -> dict:
    """Dissect ``layers`` of ``model`` on ``store``; returns {layer: LayerResult}.

    When ``out`` is given, rank 0 writes ``out/<layer>/`` and the run checkpoints (and resumes)
    under ``out``. Raises DissectError for bad input and UnknownLayerError for unknown layers.
    """
    t_start = time.perf_counter()
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(str(x) for x in layers))
    store, (lm, identity) = _open_store(store), _model_identity(model)
    _check_layers(lm, names)
    prep = resolve_preprocessing(
        lm.preprocessing, config.input_size, config.mean, config.std, config.transform, _image_size(store)
    )
    input_size = prep.input_size
    layout = config.layout
    config = config.replace(mean=prep.dataset_mean, std=prep.dataset_std, transform=None)  # as resolved
    key = _model_key(identity, names, prep, layout, config)
    run = Run(store, config, out, key)
    lm.module.to(run.device).eval()
    plans = plan_model(lm, names, prep.input_size, run.device, layout, prep.transform, run.info.rank == 0)
    shapes = {n: p.shape for n, p in plans.items()}
    caches = _open_caches(run, key, plans)
    state = run.checkpoint.agree(_usable(run.checkpoint.load(names), caches))
    stats = run.statistics(shapes, state)
    run.timings["setup"] = time.perf_counter() - t_start

    pass1 = _model_pass1(run, lm, plans, prep, caches, stats, state)
    run.passes(
        stats,
        state,
        pass1,
        lambda: {n: open_activations(c.path) for n, c in caches.items()},
        list(range(len(run.my_rows))),
    )
    results = run.results(stats, dict(identity), {"input_size": list(input_size), "preprocessing": prep.record})
    _record_plans(results, plans)
    finish_results(results.values(), out, run.info, t_start)  # the results first, then the checkpoint goes
    run.finish()
    if not (config.keep_cache or config.cache_dir):
        _remove_caches(run, caches)
    return results


@_holding_out_lock
def score_activations(
    activations,
    store: Union[BrodenStore, str, Path],
    config: DissectConfig = DissectConfig(),
    out: Optional[Union[str, Path]] = None,
    name: str = "activations",
) -> LayerResult:
    """Score activations computed elsewhere: [N, U, h, w] (or [N, U]) in index.csv order.

    N is the number of index.csv rows, or, with ``config.split``, either that or the number of
    rows in the split (then in split order). ``activations`` is an array, tensor, or a .npy/.pt
    path (dissect.engine._activations reads and checks it once, before pass 1). Results go to
    ``out/<name>/`` when ``out`` is given.
    """
    from broden_builder.shared import UnsafePathError, safe_component

    try:
        safe_component(name, "result name")
    except UnsafePathError as e:
        raise DissectError(str(e)) from None
    t_start = time.perf_counter()
    store, acts = _open_store(store), open_activations(activations)
    source_info = {"kind": "activations", **({"file": acts.file} if acts.file else {})}
    key = {"source": source_info, "shape": list(acts.shape), "name": name, "content": acts.fingerprint()}
    run = Run(store, config, out, key)
    positions = _positions(run, acts)
    state = run.checkpoint.agree(run.checkpoint.load([name]))
    stats = run.statistics({name: acts.shape[1:]}, state)
    run.timings["setup"] = time.perf_counter() - t_start

    def pass1(start: int) -> str:  # the activations -> the threshold statistics
        compute = lambda batch: _checked(run, {name: torch.from_numpy(acts.rows(batch.positions))}, batch)
        run_pass(
            run.index_batches(positions, start),
            compute,
            stats,
            run.checkpoint,
            1,
            start,
            run.progress("pass 1/2 (thresholds)", start),
        )
        return "pass1_thresholds"

    run.passes(stats, state, pass1, lambda: {name: acts}, positions)
    recorded = dict(source_info, fingerprint=key["content"], sample_fingerprint=acts.fingerprint(with_file=False))
    res = run.results(stats, recorded, {"input_size": None})[name]  # explain compares the fingerprints
    finish_results([res], out, run.info, t_start)  # the results first, then the checkpoint goes
    run.finish()
    return res


# ---------------------------------------------------------------------------- inputs
def _open_store(store) -> BrodenStore:
    """The store, refused (DissectError) when validate would reject its label numbers (duplicate
    numbers, numbers unknown to label.csv in c_*.csv or image-level cells), naming the problem."""
    from broden_builder.shared import label_number_problems

    store = store if isinstance(store, BrodenStore) else BrodenStore(store)
    problems = label_number_problems(store)
    if problems:
        more = f" (and {len(problems) - 3} more; see broden validate {store.root})" if len(problems) > 3 else ""
        raise DissectError(
            f"{store.root}: label numbers broden validate rejects: "
            + "; ".join(f"{p.file}:{p.row}: {p.message}" for p in problems[:3])
            + more
        )
    return store


def _image_size(store: BrodenStore) -> tuple:
    if not store.rows:
        raise DissectError(f"{store.root / 'index.csv'} has no images")
    return store.rows[0].ih, store.rows[0].iw


def _positions(run: Run, acts) -> list:
    """Array rows of this shard's images: the index.csv row, or the position in the split."""
    n, n_all, n_split, split = acts.shape[0], len(run.store.rows), len(run.rows), run.cfg.split
    if n == n_all:
        positions = list(run.rows)  # array row = index.csv row
    elif split is not None and n == n_split:
        positions = list(range(n_split))
    else:
        extra = f" or the {n_split} rows of split {split!r}" if split else ""
        raise DissectError(
            f"{acts.origin}: activations hold {n} images but {run.store.root / 'index.csv'} has "
            f"{n_all} rows{extra}; activations must be in index.csv order"
        )
    return positions[run.start : run.start + len(run.my_rows)]


def _checked(run: Run, acts: dict, batch: Batch) -> dict:
    rows = batch.index.tolist()
    for n, a in acts.items():
        check_finite(n, a, rows, run.store)
    return acts


# ---------------------------------------------------------------------------- the model
def _model_identity(model) -> tuple:
    """(LoadedModel, identity record for cache keys and result.json; dissect.capture.model_record)."""
    return loaded_model(model), model_record(model)


def _check_layers(lm: LoadedModel, names: Sequence[str]) -> None:
    """Fail early (before any image is read) on unknown modules, malformed selectors and two
    selectors that would share a result folder."""
    if not names:
        raise DissectError("no layer to dissect")
    folders: dict = {}
    for n in names:
        other = folders.setdefault(safe_name(n), n)
        if other != n:
            raise DissectError(
                f"layers {other!r} and {n!r} would share the result folder {safe_name(n)!r}; "
                f"dissect them in separate runs (different --out)"
            )
        if not lm.is_torchscript:
            resolve_selector(lm.module, n)


def _record_plans(results: dict, plans: dict) -> None:
    """result.json settings: which tensor was captured and how it was laid out (a result must say
    which call and which tensor of a structured output it scored, and how tokens became a map)."""
    for n, res in results.items():
        p = plans[n]
        res.settings.update(
            {
                "selector": p.selector,
                "requested": n,
                "module": p.module,
                "calls": p.calls,
                "structure": p.structure,
                "captured_shape": list(p.captured_shape),
                "layout": p.layout.to_dict(),
            }
        )


def _images(run: Run, input_size: tuple, start: int) -> BrodenDataset:
    rows = run.my_rows[start * run.cfg.batch_size :]
    return BrodenDataset(
        run.store, rows=rows, image_size=input_size, mean=run.cfg.mean, std=run.cfg.std, with_labels=False
    )


def _model_compute(run: Run, lm: LoadedModel, plans: dict, prep: Preprocessing, arrays: dict, start: int):
    """Pass 1's compute: forward (copies of the planned tensors, laid out as [B, U, h, w]), check,
    round to the cache dtype, write the cache rows."""
    tdt = torch.float16 if run.cfg.cache_dtype == "float16" else torch.float32
    next_row = [start * run.cfg.batch_size]

    # a CPU forward's large convolutions get the cores the workers leave (dissect.engine._resources); the
    # statistics stay single-threaded
    fwd_threads = run.parallel.forward_threads if run.device.type == "cpu" else run.parallel.threads

    forward = ModelForward(lm, plans, run.device, prep.input_size, prep.transform)

    def compute(batch: Batch) -> dict:
        idx, lo = batch.index, next_row[0]
        apply_threads(fwd_threads)
        try:
            feats, rounded = forward(batch), {}
        finally:
            apply_threads(run.parallel.threads)
        for n in plans:
            r = cache_rounded(n, feats[n], tdt, idx.tolist(), run.store)
            arrays[n][lo : lo + r.shape[0]] = r.cpu().numpy()
            rounded[n] = r
        next_row[0] = lo + len(idx)
        return rounded

    return compute


# ---------------------------------------------------------------------------- the activation cache
def _open_caches(run: Run, key: dict, plans: dict) -> dict:
    """{layer: ActivationCache} of this rank's shard, keyed by model, layer (its plan: selector,
    layout, shape), data and store."""
    caches = {}
    for n, plan in plans.items():
        layer_key = dict(
            key,
            layer=n,
            shape=list(plan.shape),
            plan=plan.to_dict(),
            rows=run.key["rows"],
            split=run.cfg.split,
            store=run.key["store"],
            dtype=run.cfg.cache_dtype,
        )
        layer_key.pop("layers", None)
        caches[n] = ActivationCache(run.cache_dir, f"{safe_name(n)}.rank{run.info.rank}of{run.info.world}", layer_key)
    return caches


def _usable(state: Optional[dict], caches: dict) -> Optional[dict]:
    """The checkpoint, unless the cache it relies on is gone or different."""
    if state is not None and not all(c.matches(require_complete=state["pass"] == 2) for c in caches.values()):
        return None
    return state


def _read_rows(run: Run, arrays: dict, batch: Batch) -> dict:
    lo, hi = batch.positions[0], batch.positions[-1] + 1
    return _checked(run, {n: torch.from_numpy(np.array(a[lo:hi], dtype=np.float32)) for n, a in arrays.items()}, batch)


def _remove_caches(run: Run, caches: dict) -> None:
    for c in caches.values():
        c.remove()
    try:
        run.cache_dir.rmdir()
    except OSError:
        pass
