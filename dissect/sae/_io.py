"""Reading and writing SAE files: this package's format and SAELens'.

**This package's format** (written by ``dissect sae train``): a folder with

- ``sae.safetensors``: float32 ``W_enc`` [U, F], ``b_enc`` [F], ``W_dec`` [F, U], ``b_dec`` [U]
  (and ``threshold`` [F] for jumprelu), in raw unit values: the input normalisation used in
  training is folded into them (dissect.sae._train), so ``pre = (x - b_dec) @ W_enc + b_enc``;
- ``sae.json``: {"format": "broden-dissect-sae", "version": 1, "units", "features", "activation",
  "k", "layer", "model", "store", "input_normalisation", "epochs", "reconstruction_error",
  "explained_variance", "dead_features", ...}.

**SAELens** (a folder with ``cfg.json`` + ``sae_weights.safetensors``): tensors ``W_enc``
[d_in, d_sae], ``b_enc`` [d_sae], ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in] and, for JumpReLU,
``threshold`` [d_sae] (or ``log_threshold``, whose exp is the threshold). cfg.json: ``d_in``,
``d_sae``, ``architecture`` ("standard" = ReLU, "topk", "jumprelu"; older files say
``activation_fn_str`` "relu"/"topk" instead), ``k`` or ``activation_fn_kwargs.k`` for TopK,
``apply_b_dec_to_input`` (default true: the encoder reads ``x - b_dec``, else ``x``),
``normalize_activations`` (only "none" or absent is accepted: other schemes scale the input
by statistics the file does not hold). Gated SAEs are refused.

Both load into :class:`dissect.sae.SparseEncoder`. ``safetensors`` comes with the ``sae`` extra.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ._encoder import ACTIVATIONS, SAEError, SparseEncoder

FORMAT = "broden-dissect-sae"
WEIGHTS, META = "sae.safetensors", "sae.json"
LENS_WEIGHTS, LENS_CFG = "sae_weights.safetensors", "cfg.json"
INSTALL = "pip install 'broden-dissect[sae]'"


def _safetensors():
    """The safetensors.numpy module, or SAEError saying how to install it."""
    try:
        import safetensors.numpy as st
    except ImportError:
        raise SAEError(f"SAE files need the safetensors package, which is not installed: {INSTALL}") from None
    return st


def save_sae(folder: Union[str, Path], tensors: dict, meta: dict) -> Path:
    """Write ``folder/sae.safetensors`` (float32 ``tensors``) and ``folder/sae.json`` (``meta`` plus
    format, version and the weights' sha256), each atomically; returns the folder."""
    from broden_builder.shared import atomic_write_bytes, atomic_write_text

    st, folder = _safetensors(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    blob = st.save(arrays)
    atomic_write_bytes(folder / WEIGHTS, blob)
    doc = dict(meta, format=FORMAT, version=1, weights=WEIGHTS, weights_sha256=hashlib.sha256(blob).hexdigest())
    atomic_write_text(folder / META, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return folder


def _read_weights(path: Path) -> dict:
    st = _safetensors()
    try:
        return st.load(path.read_bytes())
    except Exception as e:  # safetensors raises its own SafetensorError for any malformed file
        raise SAEError(f"{path}: not a readable safetensors file ({e})") from None


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise SAEError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict):
        raise SAEError(f"{path}: expected a JSON object")
    return doc


def _need(weights: dict, path: Path, *names) -> list:
    missing = [n for n in names if n not in weights]
    if missing:
        raise SAEError(f"{path}: missing tensor(s) {', '.join(missing)} (has {', '.join(sorted(weights)) or 'none'})")
    return [weights[n] for n in names]


def _load_ours(folder: Path) -> SparseEncoder:
    meta = _read_json(folder / META)
    if meta.get("format") != FORMAT:
        raise SAEError(f"{folder / META}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    w = _read_weights(folder / WEIGHTS)
    W_enc, b_enc, b_dec = _need(w, folder / WEIGHTS, "W_enc", "b_enc", "b_dec")
    act = meta.get("activation")
    if act not in ACTIVATIONS:
        raise SAEError(f"{folder / META}: activation {act!r} is not one of {ACTIVATIONS}")
    record = {
        "format": FORMAT,
        "path": str(folder.resolve()),
        "activation": act,
        "k": meta.get("k"),
        "weights_sha256": hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest(),
    }
    for key in ("layer", "model", "store", "epochs", "explained_variance", "dead_features", "reconstruction_error"):
        if key in meta:
            record[key] = meta[key]
    return SparseEncoder(
        W_enc, b_enc, b_dec, act, k=meta.get("k"), threshold=w.get("threshold"), W_dec=w.get("W_dec"), record=record
    )


def _lens_activation(cfg: dict, path: Path) -> tuple:
    """(activation, k) of a SAELens cfg.json."""
    arch = str(cfg.get("architecture") or "").lower()
    fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "").lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    if arch == "gated":
        raise SAEError(f"{path}: gated SAEs are not supported (architecture 'gated')")
    if arch == "jumprelu" or fn == "jumprelu":
        return "jumprelu", None
    if arch == "topk" or fn == "topk":
        if not isinstance(k, int) or isinstance(k, bool):
            raise SAEError(f"{path}: a TopK SAE needs an integer k (cfg 'k' or activation_fn_kwargs.k), got {k!r}")
        return "topk", k
    if arch in ("", "standard") and fn in ("", "relu"):
        return "relu", None
    raise SAEError(
        f"{path}: architecture {arch!r} / activation_fn_str {fn!r} is not supported (standard/relu, topk, jumprelu)"
    )


def _load_lens(folder: Path) -> SparseEncoder:
    cfg_path = folder / LENS_CFG
    cfg = _read_json(cfg_path)
    norm = cfg.get("normalize_activations")
    if norm not in (None, "none"):
        raise SAEError(f"{cfg_path}: normalize_activations {norm!r} is not supported (only 'none')")
    act, k = _lens_activation(cfg, cfg_path)
    w = _read_weights(folder / LENS_WEIGHTS)
    W_enc, b_enc, W_dec, b_dec = _need(w, folder / LENS_WEIGHTS, "W_enc", "b_enc", "W_dec", "b_dec")
    thr = w.get("threshold")
    if act == "jumprelu" and thr is None:
        thr = np.exp(_need(w, folder / LENS_WEIGHTS, "log_threshold")[0])
    for name, want, got in (("d_in", cfg.get("d_in"), W_enc.shape[0]), ("d_sae", cfg.get("d_sae"), W_enc.shape[-1])):
        if want is not None and want != got:
            raise SAEError(f"{cfg_path}: {name} is {want} but W_enc is {W_enc.shape[0]} x {W_enc.shape[-1]}")
    offset = b_dec if cfg.get("apply_b_dec_to_input", True) else np.zeros_like(b_dec)
    # the encoder reads x - offset; with the offset folded into b_enc it reads x - b_dec as in SparseEncoder
    b_enc_eff = np.asarray(b_enc, np.float64) + (np.asarray(b_dec, np.float64) - offset) @ np.asarray(W_enc, np.float64)
    record = {
        "format": "saelens",
        "path": str(folder.resolve()),
        "activation": act,
        "k": k,
        "weights_sha256": hashlib.sha256((folder / LENS_WEIGHTS).read_bytes()).hexdigest(),
    }
    for key in ("hook_name", "model_name", "hook_layer"):
        if key in cfg:
            record[key] = cfg[key]
    return SparseEncoder(W_enc, b_enc_eff, b_dec, act, k=k, threshold=thr, W_dec=W_dec, record=record)


def _named(load, folder: Path, described_by: Path) -> SparseEncoder:
    """``load(folder)``, every SAEError naming the file that describes the SAE when it does not name
    a file of the folder already (SparseEncoder's shape and k checks know no file)."""
    try:
        return load(folder)
    except SAEError as e:
        if str(e).startswith(str(folder / "_")[:-1]):  # "FOLDER/FILE: ..." names its file already
            raise
        raise SAEError(f"{described_by}: {e}") from None


def load_sae(path: Union[str, Path], units: Optional[int] = None, layer: Optional[str] = None) -> SparseEncoder:
    """The SAE in folder ``path`` (this package's sae.json, or SAELens' cfg.json); a path to one of
    those files means its folder. ``units``: the layer's width; a file of another input width is
    refused (SAEError naming both widths and ``layer``)."""
    p = Path(path)
    if p.is_file() and p.name not in (META, LENS_CFG, WEIGHTS, LENS_WEIGHTS):
        raise SAEError(
            f"{path}: not an SAE; give its folder (with {META}, or SAELens' {LENS_CFG}) or one of those files"
        )
    folder = p.parent if p.is_file() else p
    if not folder.is_dir():
        raise SAEError(f"SAE {path} does not exist")
    if (folder / META).is_file():
        enc = _named(_load_ours, folder, folder / META)
    elif (folder / LENS_CFG).is_file():
        enc = _named(_load_lens, folder, folder / LENS_CFG)
    else:
        raise SAEError(f"{path}: no {META} (this package's format) or {LENS_CFG} (SAELens) in it")
    if units is not None and enc.units != units:
        where = f"layer {layer!r}" if layer else "the layer"
        raise SAEError(f"SAE {folder} reads {enc.units} units (its input width) but {where} has {units} units")
    return enc


__all__ = ["save_sae", "load_sae", "FORMAT", "INSTALL"]
