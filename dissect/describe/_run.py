"""``dissect describe``: open-vocabulary words for each unit (CLIP-Dissect's SoftWPMI), cached embeddings.

Steps: the units' activations on the probe images ([N, U], spatial means: _probe.py); the probe
images' and the words' embeddings by an image-text model (_clip.py), cached under
``O/.describe-cache`` keyed by the model (its weights' sha256), the images and the vocabulary;
their cosine similarities [N, T]; SoftWPMI [U, T] (_softwpmi.py); the top 5 words per unit
(_output.py). The output folder is held under its lock while the files are written.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import DissectError
from ._clip import ImageText
from ._output import write_descriptions
from ._probe import ProbeImages
from ._softwpmi import soft_wpmi

CACHE = ".describe-cache"
#: CLIP-Dissect's defaults (Oikarinen & Weng 2023, their code's soft_wpmi)
PARAMS = {"top_k": 100, "a": 10.0, "lam": 1.0, "p_start": 0.998, "p_end": 0.97}


def _cached(cache: Optional[Path], kind: str, key: dict, compute) -> torch.Tensor:
    """``compute()`` once per key: stored as ``cache/<kind>-<sha>.pt`` (atomic), reused while the key holds."""
    if cache is None:
        return compute()
    from broden_builder.shared import atomic_write_bytes

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = cache / f"{kind}-{digest}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache file is recomputed
            pass
    t = compute()
    buf = io.BytesIO()
    torch.save(t.cpu(), buf)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return t


def image_embeddings(
    model: ImageText, probe: ProbeImages, batch_size: int = 64, cache: Optional[Path] = None, quiet: bool = True
) -> torch.Tensor:
    """[N, D] float32 embeddings of the probe images (cached by model and images)."""
    from broden_builder.shared import progress

    def compute():
        n = (len(probe) + batch_size - 1) // batch_size
        with torch.inference_mode():
            parts = [
                model.encode_image(x).float().cpu()
                for x in progress(probe.batches(batch_size), quiet, total=n, desc="describe: images", unit="batch")
            ]
        return torch.cat(parts)

    return _cached(cache, "image", {"model": model.identity, "images": probe.key, "n": len(probe)}, compute)


def text_embeddings(
    model: ImageText, words: Sequence[str], batch_size: int = 256, cache: Optional[Path] = None
) -> torch.Tensor:
    """[T, D] float32 embeddings of the words (cached by model and vocabulary)."""

    def compute():
        with torch.inference_mode():
            return torch.cat(
                [
                    model.encode_text(list(words[lo : lo + batch_size])).float().cpu()
                    for lo in range(0, len(words), batch_size)
                ]
            )

    vocab = hashlib.sha256("\n".join(words).encode()).hexdigest()
    return _cached(cache, "text", {"model": model.identity, "vocabulary": vocab, "n": len(words)}, compute)


def _unit_norm(x: torch.Tensor, what: str) -> torch.Tensor:
    n = x.norm(dim=-1, keepdim=True)
    if not torch.isfinite(x).all() or (n == 0).any():
        raise DissectError(f"the image-text model gave {what} embeddings that are zero or not finite")
    return x / n


def describe_units(
    summary: torch.Tensor, image_emb: torch.Tensor, text_emb: torch.Tensor, words: Sequence[str], top: int = 5, **params
) -> list:
    """Rows {unit (1-based), words (top ``top``, best first), scores} of every unit.

    ``summary`` [N, U] unit activations on the probe images; ``image_emb`` [N, D]; ``text_emb``
    [T, D] of ``words``; ``params`` override CLIP-Dissect's SoftWPMI defaults (PARAMS).
    """
    if (
        image_emb.shape[0] != summary.shape[0]
        or text_emb.shape[0] != len(words)
        or image_emb.shape[1] != text_emb.shape[1]
    ):
        raise DissectError(
            f"shapes do not fit: activations {tuple(summary.shape)}, image embeddings "
            f"{tuple(image_emb.shape)}, text embeddings {tuple(text_emb.shape)} for {len(words)} words"
        )
    sims = _unit_norm(image_emb.float(), "image") @ _unit_norm(text_emb.float(), "text").T
    score = soft_wpmi(sims, summary.float(), **{**PARAMS, **params})
    k = min(top, len(words))
    best = torch.topk(score, k=k, dim=1)
    return [
        {"unit": u + 1, "words": [words[j] for j in best.indices[u].tolist()], "scores": best.values[u].tolist()}
        for u in range(score.shape[0])
    ]


def describe_layer(
    out,
    name: str,
    summary: torch.Tensor,
    model: ImageText,
    probe: ProbeImages,
    words: Sequence[str],
    settings: dict,
    batch_size: int = 64,
    quiet: bool = True,
    **params,
) -> dict:
    """Describe the units of ``summary`` and write ``out/<name>/descriptions.csv`` under the lock of
    ``out``; returns the agreement summary (dissect.describe._output.write_descriptions)."""
    from broden_builder.shared import exclusive

    from ..results import safe_name, sweep_partial_results

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out, "dissect describe"):
        sweep_partial_results(out)
        cache = out / CACHE
        img = image_embeddings(model, probe, batch_size, cache, quiet)
        txt = text_embeddings(model, list(words), cache=cache)
        rows = describe_units(summary, img, txt, list(words), **params)
        full = dict(
            settings,
            softwpmi={**PARAMS, **params},
            clip=model.identity,
            images=len(probe),
            words=len(words),
            method="CLIP-Dissect SoftWPMI (Oikarinen & Weng, ICLR 2023)",
        )
        return write_descriptions(out / safe_name(name), rows, full)


__all__ = ["PARAMS", "image_embeddings", "text_embeddings", "describe_units", "describe_layer"]
