"""Explain the units of a dissected layer: ``explain_result(O/<layer>, activations=... | model=...)``.

The thresholds, categories, split, upsampling mode, input preprocessing, cache dtype and basis
are read from the layer's result.json / thresholds.npy, so the unit masks are the ones its
tally counted. Activations are either given (the array ``dissect score`` scored) or computed
again from the model (one forward pass over the store, rounded to the cache dtype as the
runner's cache rounds them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import torch

from broden_builder import BrodenStore

from ..errors import DissectError
from ..capture import model_record
from ..results import check_same_model, load_result, open_store, results_lock
from .layer import LayerExplanations, explain_activations
from .output import write_explanations


class ExplainError(DissectError):
    """Bad input to an explanation (result folder, activations, store); the message says which."""


def model_activations(
    model,
    layer: str,
    store: BrodenStore,
    rows,
    path: Path,
    input_size=None,
    mean=None,
    std=None,
    dtype: str = "float16",
    batch_size: int = 32,
    workers: int = 0,
    device="cpu",
    quiet=True,
    layout=None,
):
    """Run ``model`` over store rows ``rows`` and write ``layer``'s feature map [N, U, h, w] (the
    selector and layout as dissected, see dissect.capture._plan) to the .npy ``path``, rounded to
    ``dtype`` as the runner's cache rounds it; returns the array (memory-mapped). The images,
    batches, plan, forward pass and rounding are pass 1's (dissect.engine._model_input)."""
    from broden_builder.shared import progress
    from broden_builder.torch_dataset import IMAGENET_MEAN, IMAGENET_STD

    from ..engine import ModelForward, cache_rounded, image_batches, loaded_model, plan_model

    lm = loaded_model(model)
    dev = torch.device(device)
    lm.module.to(dev).eval()
    r0 = store.rows[rows[0]]
    size = tuple(input_size) if input_size else (r0.ih, r0.iw)
    plans = plan_model(lm, [layer], size, dev, layout=layout, say=False)
    forward = ModelForward(lm, plans, dev, size)
    tdt = torch.float16 if dtype == "float16" else torch.float32
    shape = (len(rows),) + tuple(plans[layer].shape)
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float16 if dtype == "float16" else np.float32, shape=shape
    )
    lo = 0
    batches = image_batches(store, rows, size, mean or IMAGENET_MEAN, std or IMAGENET_STD, batch_size, workers)
    for batch in progress(batches, quiet, desc="explain: activations", unit="batch", per_unit=batch_size, leave=False):
        a = cache_rounded(layer, forward(batch)[layer], tdt, batch.index.tolist(), store).cpu().numpy()
        out[lo : lo + a.shape[0]] = a
        lo += a.shape[0]
    out.flush()
    return np.load(path, mmap_mode="r")


def _given_activations(activations, store: BrodenStore, rows, layer_dir: Path, doc: dict):
    """Scored activations (array, tensor, .npy/.pt path) as an array-like in ``rows`` order; refused
    when their fingerprint differs from the one result.json recorded at scoring."""
    from ..engine import open_activations

    try:
        acts = open_activations(activations)  # the runner's checked loader
    except ValueError as e:
        raise ExplainError(str(e)) from None
    _same_activations(acts, layer_dir, doc)
    activations = _Block(acts)
    shape = acts.shape
    if shape[0] == len(store.rows) and len(rows) != len(store.rows):
        from .layer import _Rows

        activations = _Rows(activations, rows)  # activations of every row: the split's rows
    return activations


def _same_activations(acts, layer_dir: Path, doc: dict) -> None:
    """ExplainError when ``acts`` are not the activations ``layer_dir`` was scored from: the file
    fingerprint (shape, dtype, sample rows, size, mtime) when both are files, else the sample one."""
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    if model.get("kind") != "activations":
        return  # thresholds of a model run: the activations are computed again or given by the caller
    if acts.file and model.get("file") and model.get("fingerprint"):
        same = acts.fingerprint() == model["fingerprint"]
    elif model.get("sample_fingerprint"):
        same = acts.fingerprint(with_file=False) == model["sample_fingerprint"]
    else:
        return  # a result scored before fingerprints were recorded
    if not same:
        raise ExplainError(
            f"{acts.file or 'the activations'}: not the activations {layer_dir} was scored from "
            f"(their content, size or modification time changed since); the thresholds would not "
            f"fit them: delete {layer_dir} (or give another --out) to score them again"
        )


class _Block:
    """dissect.engine._activations.Activations read by slices (``a[lo:hi]`` -> float32 rows)."""

    def __init__(self, acts):
        self.acts, self.shape = acts, tuple(acts.shape)

    def __getitem__(self, sl):
        return self.acts.rows(range(*sl.indices(self.shape[0])))


def _basis(layer_dir: Path, settings: dict, units: int):
    """The basis matrix recorded in settings["basis"] (None without one); refuses a changed file."""
    basis = settings.get("basis")
    if not isinstance(basis, dict):
        return None
    from ..engine import describe, load_basis, random_orthogonal

    matrix = (
        random_orthogonal(units, basis["seed"]) if basis.get("kind") == "rotate" else load_basis(basis["file"], units)
    )
    if basis.get("sha256") and describe(matrix)["sha256"] != basis["sha256"]:
        raise ExplainError(
            f"{layer_dir}: the basis it was dissected with ({basis.get('file') or basis}) "
            "has changed since (sha256 differs)"
        )
    return matrix


def _sae(layer_dir: Path, settings: dict):
    """The SAE encoder of a features result (settings["sae"]; None for units); refuses a changed file."""
    sae = settings.get("sae")
    if settings.get("dissected") != "feature" or not isinstance(sae, dict):
        return None
    from ..sae import SAEError, load_sae

    try:
        enc = load_sae(sae["path"], units=sae.get("units"))
    except SAEError as e:
        raise ExplainError(f"{layer_dir}: {e}") from None
    if sae.get("weights_sha256") and enc.record.get("weights_sha256") != sae["weights_sha256"]:
        raise ExplainError(
            f"{layer_dir}: the SAE it was dissected with ({sae['path']}) has changed since "
            "(sha256 of its weights differs)"
        )
    return enc


def _layer_activations(
    activations, model, res, store, rows, layer_dir: Path, tmp: Path, batch_size: int, workers: int, device, quiet: bool
):
    """The layer's activations for :func:`explain_result`: the given ones (checked against the store's
    rows), else the model's, captured as the dissection did into ``tmp``; ExplainError without either."""
    settings = res.settings or {}
    if activations is not None:
        return _given_activations(activations, store, rows, layer_dir, {"model": res.model})
    if model is not None:
        lay = settings.get("layout") if isinstance(settings.get("layout"), dict) else {}
        forced = lay.get("kind") if str(lay.get("source", "")).startswith("forced") else None
        return model_activations(
            model,
            settings.get("selector") or res.layer,
            store,
            rows,
            tmp / "acts.npy",
            input_size=settings.get("input_size"),
            mean=settings.get("mean"),
            std=settings.get("std"),
            dtype=settings.get("cache_dtype", "float16"),
            batch_size=batch_size,
            workers=workers,
            device=device,
            quiet=quiet,
            layout=forced,
        )
    raise ExplainError("give the activations or the model")


def explain_result(
    layer_dir: Union[str, Path],
    activations=None,
    model=None,
    store=None,
    length: int = 3,
    beam: int = 5,
    batch_size: int = 32,
    workers: int = 0,
    device="cpu",
    quiet: bool = True,
    write: bool = True,
) -> LayerExplanations:
    """Explain every unit of the layer whose results are in ``layer_dir`` and (``write``) write
    ``layer_dir/explanations.csv``. Give ``activations`` ([N, U, h, w] array-like or a .npy/.pt
    path, as scored) or ``model`` (an nn.Module or LoadedModel; the layer is result.json's).
    ``store`` defaults to the path recorded in result.json. Raises ExplainError."""
    from broden_builder.torch_dataset import select_rows

    layer_dir = Path(layer_dir)
    res = load_result(layer_dir, load_maps=False)
    if model is not None and activations is None:  # another model's thresholds would not fit its units
        check_same_model(layer_dir, model_record(model), res.model)
    thr, settings = res.thresholds, res.settings or {}
    store = open_store(res, store)
    rows = select_rows(store, settings.get("split"))
    with tempfile.TemporaryDirectory(prefix=".explain-", dir=layer_dir) as tmp:
        activations = _layer_activations(
            activations, model, res, store, rows, layer_dir, Path(tmp), batch_size, workers, device, quiet
        )
        sae = _sae(layer_dir, settings)
        units = sae.units if sae is not None else len(thr)
        if tuple(activations.shape[1:2]) != (units,):
            raise ExplainError(f"activations have {activations.shape[1]} units, {layer_dir} has {units}")
        matrix = sae if sae is not None else _basis(layer_dir, settings, len(thr))
        try:
            ex = explain_activations(
                activations,
                thr,
                store,
                categories=settings.get("categories"),
                rows=rows,
                length=length,
                beam=beam,
                upsample=settings.get("upsample", "bilinear"),
                batch_size=batch_size,
                workers=workers,
                device=device,
                quiet=quiet,
                basis=matrix,
            )
        except ValueError as e:
            raise ExplainError(f"{layer_dir}: {e}") from None
    ex.settings["layer"] = res.layer
    if matrix is not None:
        ex.settings["sae" if sae is not None else "basis"] = settings["sae" if sae is not None else "basis"]
    if write:
        with results_lock(layer_dir.parent, "dissect explain"):  # re-entrant: the CLI holds it already
            write_explanations(layer_dir, ex)
    return ex


__all__ = ["explain_result", "model_activations", "ExplainError"]
