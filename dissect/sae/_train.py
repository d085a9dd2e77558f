"""Training a top-k SAE on a layer's activations: samples are spatial positions, streamed.

Samples are the layer's maps laid out as every statistic sees them, [N, U, h, w] read as
[N*h*w, U] (one sample per image and position). They stream from the activation array (a .npy
file is read by rows, never loaded whole): each epoch the images are put in a seeded random
order and read ``chunk`` images at a time (at most ``chunk_bytes`` of float32 values), and the
positions of a chunk are shuffled (seeded) into batches. Memory is one chunk plus the model.

Input normalisation (recorded in sae.json): x' = (x - mean) / scale, ``mean`` [U] the mean of the
samples, ``scale`` the root of the mean per-unit variance (one number, so directions between units
are kept; Gao et al. 2024 normalise to a fixed mean squared norm likewise). It is folded into
the weights written (dissect.sae._io), which read raw unit values.

Resume: a checkpoint (``out/.sae_state.pt``: model, Adam state, dead-feature counters, where the
epoch stands) is written every ``checkpoint_every`` steps and at each epoch's end; the same
command resumes from it when its key (data fingerprint and settings) matches. The order of
samples depends only on (seed, epoch, chunk), so a resumed run sees the same batches as an
uninterrupted one, and on a CPU ends with the same weights. ``DISSECT_SAE_FAULT_AFTER=<step>``
kills the process after that step's checkpoint (tests).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ..errors import DissectError
from ._encoder import SparseEncoder
from ._model import TopKSAE

log = logging.getLogger(__name__)

#: bounds of the training settings that size what a training allocates (dissect.config.LIMITS holds
#: them too, for the command line); memory beyond them is checked by check_memory before training
LIMITS = {
    "features": 1 << 24,
    "chunk_mb": 1 << 20,
    "batch_size": 65536,
    "epochs": 1_000_000,
    "checkpoint_every": 2**31 - 1,
}

STATE = ".sae_state.pt"
FAULT_ENV = "DISSECT_SAE_FAULT_AFTER"


@dataclass(frozen=True)
class TrainSettings:
    """Settings of one SAE training (defaults are ``dissect sae train``'s). Raises DissectError when invalid.

    ``features`` None = 8 x units; ``k`` None = max(1, units // 8) active features per position;
    ``lr`` None = 2e-4 x sqrt(2^14 / features) (Adam; the 1/sqrt(F) scaling of Gao et al. 2024);
    ``aux_weight``, ``k_aux`` (None = units // 2) and ``dead_after`` (samples without firing, None =
    min(10M, one epoch)): the AuxK loss for dead features (Gao et al. 2024, sec. A.2).
    """

    features: Optional[int] = None
    k: Optional[int] = None
    epochs: int = 20
    batch_size: int = 1024
    lr: Optional[float] = None
    seed: int = 0
    aux_weight: float = 1 / 32
    k_aux: Optional[int] = None
    dead_after: Optional[int] = None
    chunk_bytes: int = 64 << 20
    checkpoint_every: int = 200
    quiet: bool = False

    def __post_init__(self):
        for name in ("features", "k", "k_aux", "dead_after"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise DissectError(f"{name} must be a whole number >= 1, got {v!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.chunk_bytes < 1 or self.checkpoint_every < 0:
            raise DissectError("epochs, batch_size and chunk_bytes must be >= 1, checkpoint_every >= 0")
        for name, v, hi in (
            ("features", self.features, LIMITS["features"]),
            ("k", self.k, LIMITS["features"]),
            ("batch_size", self.batch_size, LIMITS["batch_size"]),
            ("chunk_bytes", self.chunk_bytes, LIMITS["chunk_mb"] << 20),
            ("epochs", self.epochs, LIMITS["epochs"]),
            ("checkpoint_every", self.checkpoint_every, LIMITS["checkpoint_every"]),
        ):
            if v is not None and v > hi:
                raise DissectError(f"{name} must be at most {hi:,}, got {v:,}")
        if not 0 <= self.seed < 2**63:
            raise DissectError(f"seed must lie in 0..{2**63 - 1}, got {self.seed!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise DissectError(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.aux_weight) and self.aux_weight >= 0):
            raise DissectError(f"aux_weight must be >= 0, got {self.aux_weight!r}")

    def resolved(self, units: int) -> "TrainSettings":
        """These settings with every None default chosen for a layer of ``units`` units."""
        f = self.features or 8 * units
        k = self.k or max(1, units // 8)
        if k > f:
            raise DissectError(f"k = {k} active features exceeds the {f} features")
        return dataclasses.replace(
            self, features=f, k=k, lr=self.lr or 2e-4 * math.sqrt(2**14 / f), k_aux=self.k_aux or max(1, units // 2)
        )


# ---------------------------------------------------------------------------- samples
class Samples:
    """The positions of ``acts`` (dissect.activations.Activations, [N, U, h, w]) as [S, U] batches."""

    def __init__(self, acts, chunk_bytes: int, seed: int, row_names: Optional[Sequence[str]] = None):
        self.acts, self.seed = acts, int(seed)
        self.row_names = row_names  # the images of the rows (index.csv), for messages
        self.n, self.units, h, w = acts.shape
        self.per_image = h * w
        self.chunk = max(1, chunk_bytes // (self.per_image * self.units * 4))  # images per chunk
        self.total = self.n * self.per_image

    def flat(self, images) -> torch.Tensor:
        """float32 [len(images) * h * w, U]: the images' positions in (image, y, x) order."""
        a = torch.from_numpy(self.acts.rows(images))
        return a.permute(0, 2, 3, 1).reshape(-1, self.units)

    def in_order(self) -> Iterator[torch.Tensor]:
        """Every sample once, chunk by chunk in image order (statistics and evaluation)."""
        for lo in range(0, self.n, self.chunk):
            yield self.flat(range(lo, min(self.n, lo + self.chunk)))

    def chunks(self, epoch: int) -> list:
        """The image lists (each sorted, for reads in file order) of ``epoch``'s chunks."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return [sorted(order[lo : lo + self.chunk].tolist()) for lo in range(0, self.n, self.chunk)]

    def batches(self, epoch: int, chunk_no: int, images, batch_size: int) -> list:
        """The shuffled [B, U] batches of one chunk."""
        x = self.flat(images)
        perm = torch.from_numpy(np.random.default_rng([self.seed, epoch, chunk_no]).permutation(x.shape[0]))
        return list(x[perm].split(batch_size))


def _check_finite(samples: Samples, x: torch.Tensor, first_image: int) -> None:
    """DissectError naming the file, unit and image (as dissect score does) when the samples ``x``
    [S, U] of images ``first_image``... hold NaN or inf."""
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x)
    if math.isfinite(float(lo)) and math.isfinite(float(hi)):
        return
    bad = ~torch.isfinite(x)
    pos, u = (int(v) for v in bad.nonzero()[0])
    kind = "NaN" if bool(torch.isnan(x[pos, u])) else "inf"
    units = bad.any(0).nonzero().flatten().tolist()
    image = first_image + pos // samples.per_image
    names = samples.row_names
    where = f"index.csv row {image + 1} ({names[image]})" if names else f"image {image + 1} (1-based row of the file)"
    raise DissectError(
        f"{samples.acts.origin}: unit {u} (0-based) has {kind} activations on {where}; {len(units)} unit(s) are "
        f"affected: {units[:10]}{' ...' if len(units) > 10 else ''}; an SAE cannot be trained on them"
    )


def input_statistics(samples: Samples) -> tuple:
    """(mean [U] float64, scale float): mean of the samples and the root mean per-unit variance."""
    s1, s2, n = np.zeros(samples.units), np.zeros(samples.units), 0
    for x in samples.in_order():
        _check_finite(samples, x, n // samples.per_image)
        x64 = x.double()
        s1 += x64.sum(0).numpy()
        s2 += (x64 * x64).sum(0).numpy()
        n += x.shape[0]
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    scale = float(math.sqrt(var.mean()))
    if not scale > 0:
        raise DissectError(f"{samples.acts.origin}: every unit is constant; there is nothing to train an SAE on")
    return mean, scale


# ---------------------------------------------------------------------------- memory
def memory_estimate(units: int, features: int, batch_size: int, chunk_bytes: int) -> dict:
    """Bytes a training needs at its peak, about: {"model": weights (W_enc, W_dec, b_enc, b_pre),
    their gradients and Adam's two moments, 4 x 4 bytes per parameter; "work": the dense [rows, F]
    tensors of a step (pre-activations, AuxK's masked copy, top-k) or of the evaluation (2,048 rows:
    pre-activations, the code, masks), 16 bytes per row and feature (measured: 5.6 GiB above the
    interpreter for F = 200,000, U = 16, estimated 6.2 GiB); "chunk": the samples held, three
    copies of a chunk (read, shuffled, and the previous chunk's batches)}."""
    params = 2 * features * units + features + units
    return {
        "model": 16 * params,
        "work": 16 * features * max(batch_size, 2048),
        "chunk": 3 * chunk_bytes,
    }


def largest_features(units: int, batch_size: int, chunk_bytes: int, available: int) -> int:
    """The largest F whose :func:`memory_estimate` fits in ``available`` bytes (0 when none does)."""
    per_feature = 16 * (2 * units + 1) + 16 * max(batch_size, 2048)
    return max(0, (available - 16 * units - 3 * chunk_bytes) // per_feature)


def mem_available(meminfo: str = "/proc/meminfo") -> Optional[int]:
    """MemAvailable of ``meminfo`` in bytes, or None where the file or the line does not exist."""
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "MemAvailable:" and parts[1].isdigit():
            return int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    return None


def _available(device: torch.device) -> tuple:
    """(bytes available, where that was read) for the model's memory: the GPU's free memory for a
    CUDA device, else the host's MemAvailable (None where unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"free on {device}"
    return mem_available(), "MemAvailable in /proc/meminfo"


def check_memory(samples: "Samples", s: TrainSettings, device: torch.device) -> None:
    """Refuse (DissectError), before anything is allocated, a training whose :func:`memory_estimate`
    exceeds the memory available, giving the estimate and the largest ``features`` that fits. On a
    CUDA device the model and the work tensors are checked against the GPU's free memory."""
    chunk = min(samples.chunk, samples.n) * samples.per_image * samples.units * 4
    if device.type == "cuda":
        chunk = 0  # the samples are read on the host; the model and the work tensors live on the GPU
    available, where = _available(device)
    if available is None:
        return
    need = sum(memory_estimate(samples.units, s.features, s.batch_size, chunk).values())
    if need <= available:
        return
    fits = largest_features(samples.units, s.batch_size, chunk, available)
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    raise DissectError(
        f"an SAE of {s.features:,} features on {samples.units:,} units needs about {gib(need)} ({need:,} bytes: "
        f"weights, gradients and Adam state, [batch, features] work tensors, samples) but {gib(available)} is "
        f"available ({where}); "
        + (f"the largest --features that fits is {fits:,}" if fits else "no --features fits: lower --batch-size")
    )


# ---------------------------------------------------------------------------- the state of a training
class Trainer:
    """Model, optimiser, dead-feature counters and position in the schedule of one training."""

    def __init__(self, samples: Samples, s: TrainSettings, mean: np.ndarray, scale: float, device: torch.device):
        self.samples, self.s, self.device = samples, s, device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.scale = float(scale)
        g = torch.Generator().manual_seed(s.seed)
        self.model = TopKSAE(samples.units, s.features, s.k, g).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=s.lr)
        self.since_fired = torch.zeros(s.features, dtype=torch.long, device=device)  # samples since last fired
        self.dead_after = s.dead_after or min(10_000_000, samples.total)
        self.epoch, self.chunk_no, self.batch_no, self.step = 0, 0, 0, 0
        self.last_loss = float("nan")

    def train_step(self, batch: torch.Tensor) -> None:
        """One Adam step on a raw batch [B, U]."""
        x = (batch.to(self.device) - self.mean) / self.scale
        pre, indices, values, x_hat = self.model(x)
        loss = (x_hat - x).pow(2).mean()
        if self.s.aux_weight > 0:
            dead = self.since_fired >= self.dead_after
            loss = loss + self.s.aux_weight * self.model.aux_loss(x, x_hat, pre, dead, self.s.k_aux)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.model.normalise_decoder()
        self.since_fired += x.shape[0]
        self.since_fired[indices[values > 0]] = 0  # the features that fired in this batch
        self.step += 1
        self.last_loss = float(loss.detach())

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "since_fired": self.since_fired.cpu(),
            "where": torch.tensor([self.epoch, self.chunk_no, self.batch_no, self.step]),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.since_fired = state["since_fired"].to(self.device)
        self.epoch, self.chunk_no, self.batch_no, self.step = (int(v) for v in state["where"])

    def release_optimiser(self) -> None:
        """Free Adam's moments and the gradients (after the last step: the folding and the evaluation
        fit in their memory, dissect.sae._train.memory_estimate)."""
        self.opt.state.clear()
        for p in self.model.parameters():
            p.grad = None

    def folded(self) -> dict:
        """The weights in raw unit values (normalisation folded in; see the module doc)."""
        m, s = self.model, self.scale
        mean = self.mean.double().cpu()
        with torch.no_grad():
            return {
                "W_enc": (m.W_enc.double().cpu() / s).float().numpy(),
                "b_enc": m.b_enc.float().cpu().numpy(),
                "W_dec": (m.W_dec.double().cpu() * s).float().numpy(),
                "b_dec": (mean + s * m.b_pre.double().cpu()).float().numpy(),
            }


class _State:
    """The checkpoint file of a training: saved atomically, resumed only with a matching key."""

    def __init__(self, out: Path, key: dict):
        self.path, self.key = out / STATE, json.dumps(key, sort_keys=True)
        fault = os.environ.get(FAULT_ENV, "")
        self.fault = int(fault) if fault else None

    def save(self, trainer: Trainer) -> None:
        # straight to a file, never a copy of the whole state in memory (dissect.sae._train.memory_estimate)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            torch.save({"key": self.key, **trainer.state_dict()}, tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        if self.fault is not None and trainer.step >= self.fault:
            os._exit(75)  # simulated kill (tests)

    def load(self) -> Optional[dict]:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: start over
            log.warning("cannot read SAE checkpoint %s (%s); starting over", self.path, e)
            return None
        if state.get("key") != self.key:
            log.warning("SAE checkpoint %s was made with other data or settings; starting over", self.path)
            return None
        return state

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------- the loop
def _run_epochs(t: Trainer, state: _State, quiet: bool) -> None:
    """Train from where ``t`` stands to the last epoch, checkpointing; a progress bar and one log
    line per epoch (loss, steps, seconds)."""
    from broden_builder.shared import progress

    s, samples = t.s, t.samples
    per_epoch = sum(-(-len(c) * samples.per_image // s.batch_size) for c in samples.chunks(0))
    bar = progress(
        total=per_epoch * s.epochs, initial=t.step, desc="SAE training", unit="step", quiet=quiet, leave=False
    )
    while t.epoch < s.epochs:
        t0 = time.perf_counter()
        chunks = samples.chunks(t.epoch)
        while t.chunk_no < len(chunks):
            batches = samples.batches(t.epoch, t.chunk_no, chunks[t.chunk_no], s.batch_size)
            while t.batch_no < len(batches):
                t.train_step(batches[t.batch_no])
                t.batch_no += 1
                bar.update(1)
                if s.checkpoint_every and t.step % s.checkpoint_every == 0:
                    state.save(t)
            t.chunk_no, t.batch_no = t.chunk_no + 1, 0
        t.epoch, t.chunk_no = t.epoch + 1, 0
        dead = int((t.since_fired >= t.dead_after).sum())
        log.info(
            "SAE epoch %d/%d: loss %.5g, %d steps, %d dead features, %.1f s",
            t.epoch,
            s.epochs,
            t.last_loss,
            t.step,
            dead,
            time.perf_counter() - t0,
        )
        if s.checkpoint_every:
            state.save(t)
    bar.close()


def evaluate(encoder: SparseEncoder, samples: Samples) -> dict:
    """Over every sample, with the weights as written (raw units): mean squared error per unit value,
    explained variance 1 - SSE / SST (SST about each unit's mean), features that never fire, mean
    active features per position (L0)."""
    sse, s1, s2, n = 0.0, np.zeros(encoder.units), np.zeros(encoder.units), 0
    fired = torch.zeros(encoder.features, dtype=torch.bool, device=encoder.W_enc.device)
    l0 = 0
    with torch.no_grad():
        for x in samples.in_order():
            for part in x.split(2048):  # [2048, F] work tensors
                f = encoder.encode(part)
                err = encoder.decode(f).cpu().double() - part.double()
                sse += float((err * err).sum())
                fired |= (f > 0).any(0)
                l0 += int((f > 0).sum())
                s1 += part.double().sum(0).numpy()
                s2 += (part.double() ** 2).sum(0).numpy()
                n += part.shape[0]
    sst = float((s2 - s1 * s1 / n).sum())
    return {
        "reconstruction_mse": sse / (n * encoder.units),
        "explained_variance": 1.0 - sse / sst if sst > 0 else 0.0,
        "dead_features": int((~fired).sum()),
        "mean_active_features": l0 / n,
    }


def train_sae(
    acts,
    out,
    settings: TrainSettings = TrainSettings(),
    identity: Optional[dict] = None,
    device: torch.device = torch.device("cpu"),
    row_names: Optional[Sequence[str]] = None,
) -> dict:
    """Train a top-k SAE on ``acts`` (dissect.engine's Activations [N, U, h, w]); write
    ``out/sae.safetensors`` + ``out/sae.json`` (dissect.sae._io) and return sae.json's content.
    Holds the exclusive lock of ``out`` (a second training into it is refused with the holder).

    ``identity``: what sae.json records about the source (layer, model, store); ``device``: where
    the model trains (samples are read on the CPU); ``row_names``: the image of each row (index.csv),
    named when a row holds NaN or inf. Resumes from
    ``out/.sae_state.pt`` when it was made for the same data and settings. Raises DissectError.
    """
    from broden_builder.shared import exclusive

    try:
        with exclusive(out, "dissect sae train"):
            return _train_locked(acts, Path(out), settings, identity, device, row_names)
    except OSError as e:
        raise DissectError(f"{e.filename or out}: cannot use as the output folder ({e.strerror or e})") from None


def _log_start(samples: Samples, s: TrainSettings, device: torch.device) -> None:
    """Log what is about to be trained (the SAE's shape, the samples, the schedule, the device)."""
    log.info(
        "training a top-k SAE: %d units -> %d features, k = %d, %d samples (%d images x %d positions), "
        "%d epochs, batch %d, lr %.3g, on %s",
        samples.units,
        s.features,
        s.k,
        samples.total,
        samples.n,
        samples.per_image,
        s.epochs,
        s.batch_size,
        s.lr,
        device,
    )


def _train_locked(
    acts, out: Path, settings: TrainSettings, identity: Optional[dict], device: torch.device, row_names=None
) -> dict:
    """train_sae's work, with ``out``'s lock held."""
    from ._io import save_sae

    t_start = time.perf_counter()
    s = settings.resolved(acts.shape[1])
    samples = Samples(acts, s.chunk_bytes, s.seed, row_names)
    settings_doc = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("quiet", "checkpoint_every")}
    state = _State(out, {"data": acts.fingerprint(), "shape": list(acts.shape), "settings": settings_doc})
    check_memory(samples, s, device)
    mean, scale = input_statistics(samples)
    trainer = Trainer(samples, s, mean, scale, device)
    saved = state.load()
    if saved is not None:
        trainer.load_state_dict(saved)
        log.info("resuming SAE training from %s (epoch %d, step %d)", state.path, trainer.epoch + 1, trainer.step)
    _log_start(samples, s, device)
    _run_epochs(trainer, state, s.quiet)
    trainer.release_optimiser()
    weights = trainer.folded()
    enc = SparseEncoder(weights["W_enc"], weights["b_enc"], weights["b_dec"], "topk", k=s.k, W_dec=weights["W_dec"])
    metrics = evaluate(enc.to(device), samples)
    meta = dict(
        identity or {},
        units=samples.units,
        features=s.features,
        k=s.k,
        activation="topk",
        input_normalisation={
            "kind": "mean_and_scale",
            "mean": [float(v) for v in mean],
            "scale": scale,
            "folded_into_weights": True,
        },
        epochs=s.epochs,
        steps=trainer.step,
        settings=settings_doc,
        samples={"images": samples.n, "positions_per_image": samples.per_image, "total": samples.total},
        seconds=time.perf_counter() - t_start,
        method="top-k SAE (Gao et al. 2024)",
        **metrics,
    )
    save_sae(out, weights, meta)
    state.remove()
    log.info(
        "SAE written to %s: explained variance %.4f, %d dead features of %d, reconstruction MSE %.4g",
        out,
        metrics["explained_variance"],
        metrics["dead_features"],
        s.features,
        metrics["reconstruction_mse"],
    )
    return json.loads((out / "sae.json").read_text("utf-8"))


__all__ = ["TrainSettings", "train_sae", "Samples", "input_statistics", "evaluate"]
