"""TopQuantile: the exact top quantile of every unit, streaming, bounded in memory, mergeable across shards.

Why our own code: the threshold T_k of Network Dissection is ``np.quantile(values, 1 - q)`` over
every activation of a unit on the whole dataset (numpy's 'linear' rule), and it must be exact
and mergeable across shards; no library offers an exact streaming order statistic per row.

Two exact methods, chosen from a memory budget at construction:

* **stream** (default while it fits): per unit, only the values that can still be among the
  ``keep = n - lo`` largest are kept (``lo`` = numpy's lower neighbour index). Each batch is
  filtered against the unit's current cutoff (the keep-th largest value kept so far); survivors
  are appended to a buffer of ``keep + slack`` values per unit, and a unit is compacted back to
  its ``keep`` largest only when its buffer would overflow. Memory: ``U x (keep + slack)``
  values of the input dtype (float16 caches stay float16); no index tensors of the kept size.
* **histogram** (when the buffer would exceed ``memory_budget`` bytes): a radix select. Values
  are mapped to order-preserving integer keys; pass 1 counts, per unit, the top 16 bits of the
  key in 65,536 bins and so brackets both neighbours of the quantile in one bin each. For
  float16 the bin *is* the value (exact after one pass). For float32 one more pass over the same
  values (``rescan``, the runner re-reads its activation cache) collects only the values inside
  the two brackets, as a histogram of their low 16 bits, which identifies them exactly.
  Memory: ``U x 65,536`` counts (float16) or ``U x 2 x 65,536`` (float32), independent of N.

Both give values equal bit for bit to ``np.quantile`` over the same values (float16 values are
interpolated in float32, i.e. as ``np.quantile(values.astype(np.float32), 1 - q)``; -0.0 is
treated as +0.0).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .protocol import DeclaredState

#: default memory budget of the kept values (bytes); above it the histogram method is used
DEFAULT_BUDGET = 1 << 30
# elements handled per vectorised step (bounds the temporaries of filters, gathers and bincounts)
_STEP = 1 << 22
_BINS = 1 << 16
_KEYS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _neighbour_indices(n: int, p: float) -> tuple:
    """numpy's 'linear' method: ascending indices (previous, next) and gamma for quantile p of n values."""
    virtual = np.asanyarray((n - 1) * p)  # same expression and dtype as numpy's get_virtual_index
    prev = float(np.floor(virtual))
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    if virtual < 0:
        return 0, 0, 0.0
    gamma = float(virtual - prev)
    return int(prev), int(prev) + 1, gamma


def _kth_largest(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of each row of [v, width] (exact, ties counted): ``topk`` when k is a
    small part of the row (measured 2x faster than ``kthvalue`` on [512, 8438] int32 keys), else
    ``kthvalue``."""
    width = rows.shape[1]
    if 4 * k <= width:
        return torch.topk(rows, k, dim=1, sorted=False).values.amin(1)
    return torch.kthvalue(rows, width - k + 1, dim=1).values


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """numpy's quantile interpolation, written out so the result is bit-identical."""
    diff = b - a
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


def to_keys(x: torch.Tensor) -> torch.Tensor:
    """Floats -> integers of the same width whose order is the float order (sign-magnitude -> two's
    complement: +x keeps its bits, -x becomes minus its magnitude bits, so -0.0 and +0.0 both map to 0)."""
    k = x.view(_KEYS[x.dtype])
    mag = k & torch.iinfo(k.dtype).max
    return torch.where(k < 0, -mag, k)


def from_keys(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of to_keys (0 -> +0.0)."""
    bits = torch.where(k < 0, (-k) | torch.iinfo(k.dtype).min, k)
    return bits.view(dtype)


class TopQuantile(DeclaredState):
    """Exact per-unit threshold ``np.quantile(values_of_unit, 1 - quantile)`` (linear method).

    ``total_count``: the number of values each unit will see in all (images x h x w over every
    shard). ``dtype``: the dtype the values are kept in (default: that of the first batch; later
    batches are converted to it, so pass values already rounded to it, e.g. the cache dtype).
    ``memory_budget``: bytes the kept values may take before the histogram method is chosen.
    Errors: ValueError for a bad quantile/count, a wrong number of units, NaN/inf, too many values.
    """

    reduction = "gather"  # see dissect.stats.protocol
    # the state tensors (None outside their method), for the type checker
    buf: torch.Tensor
    fill: torch.Tensor
    cutoff: torch.Tensor
    hist: torch.Tensor
    prefix: torch.Tensor
    rank: torch.Tensor
    #: the stream method keeps buf/fill/cutoff, the histogram method hist/prefix/rank (state_dict saves
    #: those of its method); ``to`` moves them all
    identity, tensors = ("units", "quantile", "total_count"), ("buf", "fill", "cutoff", "hist", "prefix", "rank")

    def __init__(
        self,
        units: int,
        quantile: float,
        total_count: int,
        device="cpu",
        dtype: Optional[torch.dtype] = None,
        memory_budget: int = DEFAULT_BUDGET,
    ):
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
        if total_count < 1:
            raise ValueError(f"total_count must be >= 1, got {total_count}")
        self.units = int(units)
        self.quantile = float(quantile)
        self.total_count = int(total_count)
        self.device = torch.device(device)
        self.memory_budget = int(memory_budget)
        self.lo, self.hi, self.gamma = _neighbour_indices(self.total_count, 1.0 - self.quantile)
        self.keep = self.total_count - self.lo  # the keep largest values hold both neighbours
        self.slack = min(self.total_count, max(self.keep // 2, _STEP // max(1, self.units), 1024))
        self.cap = self.keep + self.slack
        self.count = 0  # values seen per unit (pass 1)
        self.dtype: Optional[torch.dtype] = None
        self.method: Optional[str] = None
        # stream state
        self.buf = self.fill = self.cutoff = None
        # histogram state: level (16-bit digits resolved so far), prefixes and ranks of the two neighbours
        self.level = 0
        self.hist = self.prefix = self.rank = None
        self.rescan_count = 0
        if dtype is not None:
            self._setup(dtype)

    # ------------------------------------------------------------------ setup
    def _setup(self, dtype: torch.dtype) -> None:
        if dtype not in _KEYS:
            raise ValueError(f"TopQuantile: unsupported dtype {dtype} (use a floating dtype)")
        self.dtype = dtype
        self.kdt = _KEYS[dtype]
        self.bits = torch.iinfo(self.kdt).bits
        self.inf_key = int(torch.tensor(float("inf"), dtype=dtype).view(self.kdt))
        need = self.units * self.cap * torch.finfo(dtype).bits // 8
        self.method = "stream" if need <= self.memory_budget or self.bits > 32 else "histogram"
        d = self.device
        if self.method == "stream":
            self.pad = torch.iinfo(self.kdt).min  # below every key of a finite value
            self.buf = torch.full((self.units, self.cap), self.pad, dtype=self.kdt, device=d)
            self.fill = torch.zeros(self.units, dtype=torch.long, device=d)
            self.cutoff = torch.full((self.units,), self.pad, dtype=self.kdt, device=d)
        else:
            self.hist = torch.zeros(self.units, 1, _BINS, dtype=torch.long, device=d)
            self.rank = torch.tensor([self.lo, self.hi], dtype=torch.long, device=d).repeat(self.units, 1)  # [U, 2]
            self.prefix = torch.zeros(self.units, 2, dtype=torch.long, device=d)

    def held_bytes(self) -> int:
        """Bytes of the state kept between batches (the part that could grow with N; it does not)."""
        return sum(
            t.numel() * t.element_size()
            for t in (self.buf, self.fill, self.cutoff, self.hist, self.prefix, self.rank)
            if t is not None
        )

    # ------------------------------------------------------------------ input
    def _batch(self, acts: torch.Tensor) -> torch.Tensor:
        """acts [B, U, ...] -> raw bits [B, U, S] in the kept dtype (no transposed copy)."""
        if acts.dim() < 2 or acts.shape[1] != self.units:
            raise ValueError(f"activations of shape {tuple(acts.shape)} do not have {self.units} units in dimension 1")
        if self.dtype is None:
            self._setup(acts.dtype if acts.dtype.is_floating_point else torch.float32)
        x = acts.detach().to(self.device, self.dtype).reshape(acts.shape[0], self.units, -1).contiguous()
        return x.view(self.kdt)

    def _check_keys(self, keys: torch.Tensor) -> None:
        """Keys of NaN/inf have magnitudes >= the key of inf; raise naming the units."""
        if keys.numel() == 0:
            return
        lo, hi = torch.aminmax(keys)
        if int(hi) >= self.inf_key or int(lo) <= -self.inf_key:
            bad = (keys.abs() >= self.inf_key).transpose(0, 1).reshape(self.units, -1).any(1).nonzero().flatten()
            raise ValueError(f"activations contain NaN or inf (units {bad[:5].tolist()}...)")

    def _images_per_step(self, S: int, limit: int) -> int:
        return max(1, min(limit // max(1, S), _STEP // max(1, self.units * S)))

    def add(self, acts: torch.Tensor) -> None:
        """Add activations [B, U, h, w] (or [N, U]) at the layer's own resolution.
        Non-finite values raise ValueError when they can reach the kept set (the runner checks every value)."""
        raw = self._batch(acts)
        B, _, S = raw.shape
        if self.count + B * S > self.total_count:
            raise ValueError(
                f"TopQuantile got {self.count + B * S} values per unit, more than total_count={self.total_count}"
            )
        if self.method == "histogram" and self.level != 0:
            raise ValueError("TopQuantile.add after pass 1 ended; use rescan() for the extra passes")
        step = self._images_per_step(S, self.slack) if self.method == "stream" else B
        for b in range(0, B, step):
            if self.method == "stream":
                # _absorb appends at most ``slack`` values per unit; one image's map may hold more (few
                # images of a large map: S > slack), so it is fed in slices of the map then
                for s in range(0, S, self.slack):
                    self._absorb(raw[b : b + step, :, s : s + self.slack])
            else:
                keys = to_keys(raw[b : b + step].view(self.dtype))
                self._check_keys(keys)
                self._histogram(keys)
        self.count += B * S

    # ------------------------------------------------------------------ stream method
    def _absorb(self, raw: torch.Tensor, is_keys: bool = False) -> None:
        """Append the values of raw bits [b, U, S] (b * S <= slack) above each unit's cutoff; compact on overflow.
        While every cutoff is >= 0 the raw bits compare like keys (a negative value never passes).
        ``is_keys``: ``raw`` already holds checked keys (merge)."""
        if is_keys or bool((self.cutoff >= 0).all()):
            keys = raw
        else:
            keys = to_keys(raw.view(self.dtype))
            self._check_keys(keys)
        b, U, S = keys.shape
        f0 = int(self.fill[0]) if U else 0
        if (
            not is_keys
            and f0 + b * S <= self.cap
            and bool((self.cutoff == self.pad).all())
            and bool((self.fill == f0).all())
        ):
            # nothing filtered yet (the first batches): every value survives, so the block is copied in
            # unit-major order without the per-value slot arithmetic below (measured: the first 6 of 32
            # batches of 1,000 images x 512 x 7 x 7 took 90% of the quantile's time through that path)
            self.buf[:, f0 : f0 + b * S] = keys.transpose(0, 1).reshape(U, b * S)
            self.fill += b * S
            return

        def survivors():
            # image-major order (no transposed copy); block (image, unit) counts give each survivor its slot
            hot = (keys > self.cutoff.view(1, U, 1)).reshape(-1).nonzero().squeeze(1)
            block = hot // S  # image * U + unit
            per_block = torch.bincount(block, minlength=b * U)
            return hot, block, per_block, per_block.view(b, U).sum(0)

        hot, block, per_block, cnt = survivors()
        if bool(((self.fill + cnt) > self.cap).any()):
            self._compact(((self.fill + cnt) > self.cap).nonzero().squeeze(1))
            hot, block, per_block, cnt = survivors()
        if hot.numel() == 0:
            return
        vals = keys.reshape(-1)[hot]
        if not is_keys and int(vals.max()) >= self.inf_key:  # +inf or NaN (any NaN in key order, +inf in raw order)
            self._check_keys(keys if keys is not raw else to_keys(raw.view(self.dtype)))
        # slot = fill[unit] + survivors of the unit in earlier images + rank inside the (image, unit) block
        pb = per_block.view(b, U)
        earlier = (torch.cumsum(pb, 0) - pb).view(-1)
        block_start = torch.cumsum(per_block, 0) - per_block
        unit = block % U
        pos = self.fill[unit] + earlier[block] + torch.arange(hot.numel(), device=keys.device) - block_start[block]
        self.buf.view(-1)[unit * self.cap + pos] = vals
        self.fill += cnt

    def _compact(self, rows: torch.Tensor) -> None:
        """Cut the buffers of units ``rows`` (each holding more than keep values) to their keep largest."""
        per = max(1, _STEP // self.cap)
        ar = torch.arange(self.cap, device=self.buf.device)
        for i in range(0, rows.numel(), per):
            r = rows[i : i + per]
            blk = self.buf[r]  # [v, cap], padded with the smallest key
            if 4 * self.keep <= self.cap:  # the keep largest themselves (a multiset: their order is free)
                top = torch.topk(blk, self.keep, dim=1, sorted=False).values
                self.buf[r, : self.keep] = top
                self.buf[r, self.keep :] = self.pad
                self.fill[r] = self.keep
                self.cutoff[r] = top.amin(1)
                continue
            kth = _kth_largest(blk, self.keep)
            gt = (blk > kth.unsqueeze(1)).view(-1).nonzero().squeeze(1)
            row = gt // self.cap
            ngt = torch.bincount(row, minlength=r.numel())
            pos = torch.arange(gt.numel(), device=blk.device) - (torch.cumsum(ngt, 0) - ngt)[row]
            new = torch.full_like(blk, self.pad)
            new.view(-1)[row * self.cap + pos] = blk.view(-1)[gt]
            ties = (ar >= ngt.unsqueeze(1)) & (ar < self.keep)  # the keep-th largest, repeated
            new = torch.where(ties, kth.unsqueeze(1), new)
            self.buf[r] = new
            self.fill[r] = self.keep
            self.cutoff[r] = kth

    def _stream_neighbours(self) -> torch.Tensor:
        """Keys [U, 2] of the ascending-rank lo and hi values (the keep largest are in the buffer)."""
        out = torch.empty(self.units, 2, dtype=self.kdt, device=self.device)
        per = max(1, _STEP // self.cap)
        n = self.total_count
        for i in range(0, self.units, per):
            blk = self.buf[i : i + per]
            for t, rank in enumerate((self.lo, self.hi)):  # ascending rank -> (n - rank)-th largest
                out[i : i + per, t] = _kth_largest(blk, n - rank)
        return out

    # ------------------------------------------------------------------ histogram method
    def _digits(self, keys: torch.Tensor, level: int) -> tuple:
        """(prefix above this level's digit, this level's 16-bit digit) of the offset (unsigned) keys."""
        uk = keys.long() + (1 << (self.bits - 1))
        shift = self.bits - 16 * (level + 1)
        return uk >> (shift + 16), (uk >> shift) & (_BINS - 1)

    def _histogram(self, keys: torch.Tensor, level: int = 0) -> None:
        """Count this level's 16-bit digit of keys [b, U, S] per unit into ``hist`` [U, 1 or 2, bins]:
        one bincount per block of units, each block holding about as many values as bins."""
        b, U, S = keys.shape
        per = max(1, min(U, _STEP // max(1, b * S)))
        for u0 in range(0, U, per):
            k = keys[:, u0 : u0 + per]
            n = k.shape[1]
            pre, dig = self._digits(k, level)
            unit = torch.arange(n, device=keys.device).view(1, n, 1)
            if level == 0:
                idx = (unit * _BINS + dig).reshape(-1)
                self.hist[u0 : u0 + n, 0] += torch.bincount(idx, minlength=n * _BINS).view(n, _BINS)
                continue
            for t in range(2):  # only the values inside bracket t (the prefix found so far)
                inside = pre == self.prefix[u0 : u0 + n, t].view(1, n, 1)
                idx = (unit * _BINS + dig)[inside]
                self.hist[u0 : u0 + n, t] += torch.bincount(idx, minlength=n * _BINS).view(n, _BINS)

    def _resolve_level(self) -> None:
        """Find, per unit and neighbour, the bin holding its rank; narrow the bracket to it."""
        h = self.hist if self.hist.shape[1] == 2 else self.hist.expand(-1, 2, -1)
        cum = torch.cumsum(h, 2)  # [U, 2, bins]
        digit = torch.searchsorted(cum, self.rank.unsqueeze(2), right=True).squeeze(2)  # first cum > rank
        before = torch.where(digit > 0, torch.gather(cum, 2, (digit - 1).clamp(min=0).unsqueeze(2)).squeeze(2), 0)
        self.rank = self.rank - before
        self.prefix = (self.prefix << 16) | digit
        self.level += 1
        if self.level * 16 < self.bits:
            self.hist = torch.zeros(self.units, 2, _BINS, dtype=torch.long, device=self.device)
            self.rescan_count = 0
        else:
            self.hist = None

    def _maybe_resolve(self) -> None:
        if self.method == "histogram" and self.level == 0 and self.count == self.total_count:
            self._resolve_level()

    @property
    def needs_rescan(self) -> bool:
        """True when the histogram method needs one more pass over the same values (float32 input)."""
        self._maybe_resolve()
        return self.method == "histogram" and self.level > 0 and self.level * 16 < self.bits

    def rescan(self, acts: torch.Tensor) -> None:
        """One batch of the extra pass: the same values again (any order or batching)."""
        if not self.needs_rescan:
            raise ValueError("TopQuantile.rescan: no extra pass is needed")
        raw = self._batch(acts)
        B, _, S = raw.shape
        self.rescan_count += B * S
        if self.rescan_count > self.total_count:
            raise ValueError(
                f"TopQuantile.rescan got {self.rescan_count} values per unit, more than total_count={self.total_count}"
            )
        keys = to_keys(raw.view(self.dtype))
        self._check_keys(keys)
        self._histogram(keys, self.level)

    def end_rescan(self) -> None:
        """Close the extra pass (after every value was rescanned; shards: after summing ``hist`` and
        ``rescan_count`` over ranks)."""
        if self.rescan_count != self.total_count:
            raise ValueError(f"TopQuantile.rescan saw {self.rescan_count} values per unit, expected {self.total_count}")
        self._resolve_level()

    # ------------------------------------------------------------------ results
    def merge(self, other: "TopQuantile") -> None:
        """Fold in another shard's pass-1 statistic (same units, quantile and total_count)."""
        self.same_as(other)
        if other.dtype is None:
            self.count += other.count
            return
        if self.dtype is None:
            self._setup(other.dtype)
        if other.dtype != self.dtype or other.method != self.method:
            raise ValueError(
                f"cannot merge TopQuantile of {other.dtype}/{other.method} into {self.dtype}/{self.method}"
            )
        if self.level or other.level:
            raise ValueError("TopQuantile.merge: only pass-1 states merge (sum hist for the extra pass)")
        if self.count + other.count > self.total_count:
            raise ValueError(
                f"merged TopQuantile saw {self.count + other.count} values per unit, more than "
                f"total_count={self.total_count}"
            )
        self.count += other.count
        if self.method == "histogram":
            self.hist += other.hist.to(self.device)
            return
        buf, fill = other.buf.to(self.device), other.fill.to(self.device)
        width = int(fill.max()) if fill.numel() else 0
        for j in range(0, width, self.slack):  # absorb the other's kept values, slack columns at a time
            self._absorb(buf[:, j : j + self.slack].unsqueeze(0), is_keys=True)  # padding (smallest key) never passes

    def thresholds(self) -> torch.Tensor:
        """Tensor[U] of thresholds, equal to numpy's quantile over all values seen (float16 -> float32)."""
        if self.count != self.total_count or self.dtype is None:
            raise ValueError(f"TopQuantile saw {self.count} values per unit, expected total_count={self.total_count}")
        if self.method == "stream":
            keys = self._stream_neighbours()
        else:
            if self.needs_rescan:
                raise ValueError("TopQuantile: the histogram method needs its extra pass (rescan) first")
            keys = (self.prefix - (1 << (self.bits - 1))).to(self.kdt)
        vals = from_keys(keys.contiguous(), self.dtype)
        out_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        v = vals.to(out_dtype).cpu().numpy()
        return torch.from_numpy(np.ascontiguousarray(_lerp(v[:, 0], v[:, 1], self.gamma))).to(self.device)

    def state_dict(self) -> dict:
        c = lambda t: None if t is None else t.cpu()
        d = {
            "units": self.units,
            "quantile": self.quantile,
            "total_count": self.total_count,
            "count": self.count,
            "dtype": None if self.dtype is None else str(self.dtype).replace("torch.", ""),
            "method": self.method,
            "level": self.level,
            "rescan_count": self.rescan_count,
        }
        if self.method == "stream":
            width = int(self.fill.max()) if self.units else 0
            d.update(buf=self.buf[:, :width].cpu(), fill=self.fill.cpu(), cutoff=self.cutoff.cpu())
        elif self.method == "histogram":
            d.update(hist=c(self.hist), prefix=c(self.prefix), rank=c(self.rank))
        return d

    def load_state_dict(self, d: dict) -> None:
        self.same_as(d, "load a state into")
        self.count = int(d["count"])
        if d.get("dtype") is None:  # a state that has seen no value (e.g. an empty shard)
            self.dtype = None
            return
        self._setup(getattr(torch, d["dtype"]))
        if self.method != d.get("method"):
            raise ValueError(f"TopQuantile state used the {d.get('method')} method, this one the {self.method} method")
        self.level, self.rescan_count = int(d["level"]), int(d["rescan_count"])
        dev = self.device
        if self.method == "stream":
            self.buf[:, : d["buf"].shape[1]] = d["buf"].to(dev)
            self.fill, self.cutoff = d["fill"].to(dev), d["cutoff"].to(dev)
        else:
            self.hist = None if d["hist"] is None else d["hist"].to(dev)
            self.prefix, self.rank = d["prefix"].to(dev), d["rank"].to(dev)

    @classmethod
    def from_state_dict(cls, d: dict, device="cpu", memory_budget: int = DEFAULT_BUDGET) -> "TopQuantile":
        out = cls(d["units"], d["quantile"], d["total_count"], device, memory_budget=memory_budget)
        out.load_state_dict(d)
        return out
