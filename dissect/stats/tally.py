"""Tally: intersection, ground-truth and activation counts of unit masks against labels.

Vectorised: every pixel of a batch gets the id of its label combination in its image (its label
columns packed into one key, then torch.unique); the mask pixels (from the tiles of
dissect.stats.tiles, or a dense upsampled map) are counted per (combination, unit) with one
bincount, and each pair is expanded to its label columns and categories; image-level labels use
per-(image, unit) mask sizes. Nothing loops over units, labels or images in Python.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Optional, Sequence

import torch

from broden_builder.torch_dataset import SegBatch

from ..errors import DissectError
from .protocol import DeclaredState
from .tiles import hot_tiles, tile_plan
from .upsample import SEPARABLE, upsample

UNIONS = ("original", "lite", "all")

# bound on (mask entries x label layers) joined at once; larger batches are split by image
_MAX_JOIN = 1 << 24
# bound on the packed per-pixel label-combination key (int64); past it the key is re-numbered
_KEY_LIMIT = 1 << 62


def _segmentation_size(acts: torch.Tensor, seg: SegBatch, size) -> tuple:
    """(sh, sw) of the batch's planes, or ``size`` when it has no pixel category; checks acts is 4-D."""
    if acts.dim() != 4:
        raise ValueError(f"activations must be [B, U, h, w], got shape {tuple(acts.shape)}")
    size = seg.size or (tuple(size) if size is not None else None)
    if size is None:
        raise ValueError("SegBatch has no pixel category: pass size=(sh, sw) to add_activations")
    return size


def iou_from_counts(I: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """IoU [U, L] (float64) = I / (A + G - I), 0 where the union is 0: I [U, L] intersections, A
    [U, L] each unit's area in its label's primary category, G [L] label areas (integer counts)."""
    den = (A + G.unsqueeze(0) - I).double()
    return torch.where(den > 0, I.double() / den.clamp(min=1), torch.zeros_like(den))


class UnknownLabel(DissectError):
    """A pixel label plane holds a non-zero number that label.csv lacks (what broden validate
    rejects). args: (category, image = position in the batch, number); the caller names the row."""

    @property
    def category(self) -> str:
        return self.args[0]

    @property
    def image(self) -> int:
        return self.args[1]

    @property
    def number(self) -> int:
        return self.args[2]

    def __str__(self) -> str:
        return (
            f"a {self.category} segmentation holds label number {self.number}, which is not in label.csv "
            "(broden validate rejects this store)"
        )


def find_unknown_label(seg: SegBatch, known: torch.Tensor) -> Optional[UnknownLabel]:
    """The first pixel label outside ``known`` (bool [max + 1], True at label.csv's numbers) in
    seg's category order, then image, layer, row, column order; None when every number is known."""
    maxn = known.numel() - 1
    for cat, t in seg.pixel.items():
        t = t.to(known.device)
        bad = (t != 0) & ((t < 0) | (t > maxn) | ~known[t.clamp(0, maxn)])
        if bool(bad.any()):
            b = int(bad.flatten(1).any(1).nonzero()[0])
            return UnknownLabel(cat, b, int(t[b][bad[b]][0]))
    return None


def unique_runs(key: torch.Tensor) -> tuple:
    """``torch.unique(key, return_inverse=True, return_counts=True)`` of a 1-D key [n] made of runs of
    equal values (label planes row by row: a few runs per row): one key per run is sorted instead of
    n, and the inverse is spread back over the runs. Falls back to torch.unique when runs are short."""
    n = key.numel()
    new = torch.ones(n, dtype=torch.bool, device=key.device)
    torch.ne(key[1:], key[:-1], out=new[1:])
    starts = new.nonzero().squeeze(1)
    if starts.numel() * 4 > n:
        return torch.unique(key, return_inverse=True, return_counts=True)
    ukey, inv = torch.unique(key.index_select(0, starts), return_inverse=True)
    cid = inv.index_select(0, torch.cumsum(new, 0) - 1)
    lengths = torch.diff(starts, append=starts.new_tensor([n]))
    return ukey, cid, torch.zeros(ukey.numel(), dtype=torch.long, device=key.device).index_add_(0, inv, lengths)


class _PairCounter:
    """Counts of keys in [0, n) (mask pixels per combination id * U + unit): one dense bincount
    while n <= _MAX_JOIN, else torch.unique per chunk (memory bounded by the entries)."""

    def __init__(self, n: int, device):
        self.n, self.dense = n, n <= _MAX_JOIN
        self.cnt = torch.zeros(n if self.dense else 0, dtype=torch.long, device=device)
        self.parts: list = []

    def add(self, key: torch.Tensor) -> None:
        """Count key [m] (long, values in [0, n))."""
        if self.dense:
            self.cnt += torch.bincount(key, minlength=self.n)
        elif key.numel():
            self.parts.append(torch.unique(key, return_counts=True))

    def result(self) -> tuple:
        """(key [m], count [m] > 0) of the keys seen."""
        if self.dense:
            key = self.cnt.nonzero().squeeze(1)
            return key, self.cnt[key]
        if not self.parts:
            return self.cnt, self.cnt
        key, inv = torch.unique(torch.cat([k for k, _ in self.parts]), return_inverse=True)
        w = torch.zeros(key.numel(), dtype=torch.long, device=key.device)
        return key, w.index_add_(0, inv, torch.cat([c for _, c in self.parts]))


class BatchLabels(NamedTuple):
    """A batch's labels as label combinations (see Tally.batch_labels), shareable by the tallies of
    several layers over the same labels, categories and known numbers."""

    key: tuple  # the tally configuration and (B, S, device) they were made for
    Z: torch.Tensor
    cid: torch.Tensor
    img: torch.Tensor
    cols: torch.Tensor
    npix: torch.Tensor


#: The counts of a Tally (int64), each by its dimensions: U units, L labels, C categories. Every
#: count is a sum over images, so shards and ranks add them (the one place they are listed).
COUNTS = {"I": "UL", "G": "L", "A_original": "UC", "A_lite": "UC", "A_all": "U"}


class Tally(DeclaredState):
    """Integer counts for IoU under all three union rules (see docs/format.md, "How dissection reads the store").

    ``labels``: global label numbers in column order. ``categories``: the categories tallied
    (columns of A_original / A_lite). ``primary_category[number]`` must be one of them.
    Counts (int64): I[U, L], G[L], A_original[U, C], A_lite[U, C], A_all[U], images.
    A label counts once per pixel even if several layers or categories carry it; image-level
    labels cover the whole plane; label 0 and numbers not in ``labels`` are ignored. With ``known``
    (label.csv's numbers), a pixel label plane holding any other non-zero number raises
    UnknownLabel (checked in the same pass as the label lookup).
    """

    reduction = "sum"  # see dissect.stats.protocol
    # the COUNTS as attributes, for the type checker (None until the first batch gives the units)
    I: torch.Tensor
    G: torch.Tensor
    A_original: torch.Tensor
    A_lite: torch.Tensor
    A_all: torch.Tensor
    identity, scalars, tensors, summed = (
        ("labels", "categories", "primary"),
        ("units", "images"),
        tuple(COUNTS),
        ("images",),
    )
    tables = ("_lut", "_plut", "_prim")

    def __init__(
        self,
        labels: Sequence[int],
        categories: Sequence[str],
        image_level_categories: Iterable[str],
        primary_category: Mapping[int, str],
        device="cpu",
        units: int = None,
        known: Optional[Sequence[int]] = None,
    ):
        self.labels = [int(n) for n in labels]
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("Tally labels contain duplicate numbers")
        if any(n < 1 for n in self.labels):
            raise ValueError(f"Tally labels must be >= 1 (0 means unlabeled): {[n for n in self.labels if n < 1][:5]}")
        self.categories = list(categories)
        self.image_level_categories = [c for c in self.categories if c in set(image_level_categories)]
        self.pixel_categories = [c for c in self.categories if c not in set(self.image_level_categories)]
        cat_index = {c: i for i, c in enumerate(self.categories)}
        prim = []
        for n in self.labels:
            c = primary_category.get(n) if hasattr(primary_category, "get") else primary_category[n]
            if c not in cat_index:
                raise ValueError(
                    f"label {n}: primary category {c!r} is not one of the tallied categories {self.categories}"
                )
            prim.append(cat_index[c])
        self.primary = [self.categories[i] for i in prim]
        self.device = torch.device(device)
        self.units = units
        self.known = None if known is None else sorted({int(n) for n in known})
        self._label_key = (
            tuple(self.labels),
            tuple(self.categories),
            tuple(self.image_level_categories),
            tuple(self.primary),
            None if self.known is None else tuple(self.known),
        )
        self._prim = torch.tensor(prim, dtype=torch.long, device=self.device)
        self._make_luts()
        self.images = 0
        self.tiles_evaluated = 0  # tiles the last add_activations interpolated (diagnostic)
        for name in COUNTS:
            setattr(self, name, None)
        if units is not None:
            self._alloc(units)

    # ------------------------------------------------------------------ setup
    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def _make_luts(self) -> None:
        """_lut [maxn + 1]: number -> column, -1 where not tallied; _plut: the same with L for 0 and
        the numbers not tallied, and L + 1 for the numbers outside ``known`` (when given)."""
        L = self.n_labels
        maxn = max(self.labels + (self.known or []), default=0)
        lut = torch.full((maxn + 1,), -1, dtype=torch.long)
        lut[torch.tensor(self.labels, dtype=torch.long)] = torch.arange(L)
        plut = torch.where(lut < 0, L, lut)
        if self.known is not None:
            unknown = torch.ones(maxn + 1, dtype=torch.bool)
            unknown[torch.tensor(self.known, dtype=torch.long)] = False
            plut[unknown] = L + 1
        plut[0] = L
        self._lut, self._plut = lut.to(self.device), plut.to(self.device, torch.int32)  # L < 2^31 - 1

    def _alloc(self, units: int) -> None:
        size = {"U": units, "L": self.n_labels, "C": len(self.categories)}
        self.units = units
        for name, dims in COUNTS.items():
            setattr(self, name, torch.zeros(tuple(size[d] for d in dims), dtype=torch.long, device=self.device))

    def _columns(self, numbers: torch.Tensor) -> torch.Tensor:
        """Global numbers -> column indices (-1 for 0, negatives and numbers not tallied)."""
        numbers = numbers.to(self.device, torch.long)
        maxn = self._lut.numel() - 1
        safe = torch.where((numbers < 0) | (numbers > maxn), torch.zeros_like(numbers), numbers)
        return self._lut[safe]

    def _check_seg(self, seg: SegBatch, b: int, size: tuple) -> None:
        for c in self.pixel_categories:
            if c not in seg.pixel:
                where = "image-level" if c in seg.image_level else "missing"
                raise ValueError(
                    f"SegBatch: pixel category {c!r} is {where} (pixel categories given: {list(seg.pixel)})"
                )
            t = seg.pixel[c]
            if t.dim() != 4 or t.shape[0] != b or tuple(t.shape[2:]) != size:
                raise ValueError(
                    f"SegBatch: category {c!r} has shape {tuple(t.shape)}, expected [{b}, layers, {size[0]}, {size[1]}]"
                )
        for c in self.image_level_categories:
            if c not in seg.image_level:
                where = "a pixel category" if c in seg.pixel else "missing"
                raise ValueError(
                    f"SegBatch: image-level category {c!r} is {where} (image-level given: {list(seg.image_level)})"
                )
            t = seg.image_level[c]
            if t.dim() != 2 or t.shape[0] != b:
                raise ValueError(f"SegBatch: image-level category {c!r} has shape {tuple(t.shape)}, expected [{b}, K]")

    # ------------------------------------------------------------------ counting
    def _check_batch(self, B: int, U: int, thresholds: torch.Tensor, seg: SegBatch, size: tuple) -> None:
        if self.I is None:
            self._alloc(U)
        if U != self.units:
            raise ValueError(f"activations have {U} units, the tally has {self.units}")
        if thresholds.numel() != U:
            raise ValueError(f"{thresholds.numel()} thresholds for {U} units")
        self._check_seg(seg, B, size)

    def add(self, acts_up: torch.Tensor, thresholds: torch.Tensor, seg: SegBatch) -> None:
        """Count one batch: acts_up [B, U, sh, sw] (already upsampled), thresholds [U]; mask = act > T."""
        if acts_up.dim() != 4:
            raise ValueError(f"upsampled activations must be [B, U, sh, sw], got shape {tuple(acts_up.shape)}")
        B, U, sh, sw = acts_up.shape
        self._check_batch(B, U, thresholds, seg, (sh, sw))
        if B == 0:  # an empty batch counts nothing
            return
        d, S = self.device, sh * sw
        T = thresholds.detach().to(d, acts_up.dtype).reshape(1, U, 1)
        acts_up = acts_up.detach().to(d).reshape(B, U, S)
        # bound the size of the nonzero() output: at most _MAX_JOIN mask cells per chunk of images
        step = max(1, _MAX_JOIN // (U * S))
        ent_bu, ent_p = [], []
        for b0 in range(0, B, step):
            flat = (acts_up[b0 : b0 + step] > T).reshape(-1).nonzero().squeeze(1)
            ent_bu.append(flat // S + b0 * U)
            ent_p.append(flat % S)
        self._accumulate(B, U, S, seg, torch.cat(ent_bu), torch.cat(ent_p))

    def add_activations(
        self,
        acts: torch.Tensor,
        thresholds: torch.Tensor,
        seg: SegBatch,
        mode: str = "bilinear",
        field=None,
        input_size=None,
        size=None,
        labels: Optional[BatchLabels] = None,
    ) -> None:
        """Count one batch from layer-resolution acts [B, U, h, w]: exactly the counts of
        ``add(upsample(acts, seg size, mode, field, input_size), thresholds, seg)``, but
        upsampling only the tiles where the mask can be set (dissect.stats.tiles). ``size`` (sh, sw)
        is needed only when the batch has no pixel category. ``labels``: seg's batch_labels() from
        a tally over the same labels (the layers of one batch share them), else computed here.
        bicubic (and integer acts) fall back to add()."""
        size = _segmentation_size(acts, seg, size)
        if mode not in SEPARABLE or not acts.is_floating_point():
            return self.add(upsample(acts, size, mode, field=field, input_size=input_size), thresholds, seg)
        B, U, h, w = acts.shape
        self._check_batch(B, U, thresholds, seg, tuple(size))
        if B == 0:  # an empty batch counts nothing
            return
        d, SH, SW = self.device, int(size[0]), int(size[1])
        acts = acts.detach().to(d)
        T = thresholds.detach().to(d, acts.dtype).reshape(U)
        plan = tile_plan((h, w), (SH, SW), mode, field, input_size, acts.dtype, d)
        lab = self._labels(B, SH * SW, seg, labels)
        cidu = lab[1] * U  # combination id * U of every flat pixel
        counter = _PairCounter(lab[3].shape[0] * U, d)
        self.tiles_evaluated = 0
        for m, maps, first, tiles in hot_tiles(acts, T, (SH, SW), plan, _MAX_JOIN):
            self.tiles_evaluated += tiles
            my, mx = m.shape[1:]
            off = ((torch.arange(my, device=d) * SW).view(my, 1) + torch.arange(mx, device=d)).reshape(-1)
            f = m.reshape(-1).nonzero().squeeze(1)  # the masks are sparse in the tiles: join only their pixels
            k = f // (my * mx)
            pix = first.index_select(0, k) + off.index_select(0, f - k * (my * mx))
            counter.add(cidu.index_select(0, pix) + maps.index_select(0, k) % U)
        self._count(B, U, SH * SW, lab, counter)

    def batch_labels(self, seg: SegBatch, size=None) -> BatchLabels:
        """seg's labels as label combinations (the label lookup of add_activations, including the
        unknown-label check), to pass to add_activations of every layer of the batch."""
        size = seg.size or tuple(size)
        B, S = seg.batch_size, int(size[0]) * int(size[1])
        self._check_seg(seg, B, tuple(int(x) for x in size))
        return BatchLabels((self._label_key, B, S, str(self.device)), *self._batch_labels(B, S, seg))

    def _labels(self, B: int, S: int, seg: SegBatch, labels: Optional[BatchLabels]) -> tuple:
        """_batch_labels' tuple for B images of S pixels: from ``labels`` when given (checked to be
        for this tally's labels, B, S and device; ValueError otherwise), else computed from seg."""
        if labels is None:
            return self._batch_labels(B, S, seg)
        if labels.key != (self._label_key, B, S, str(self.device)):
            raise ValueError("labels were made for another batch size, segmentation size, device or tally labels")
        return tuple(labels[1:])

    def _label_planes(self, B: int, S: int, seg: SegBatch) -> list:
        """Column number planes [B, S] (int32) of every pixel label layer, L = none (0, untallied or,
        without ``known``, out-of-range numbers); layers holding only zeros are skipped. With
        ``known``, raises UnknownLabel (see find_unknown_label) for a number outside it."""
        L, maxn, check = self.n_labels, self._plut.numel() - 1, self.known is not None
        planes = []
        for c in self.pixel_categories:
            for t in seg.pixel[c].reshape(B, seg.pixel[c].shape[1], S).unbind(1):
                if t.numel() == 0:
                    continue
                lo, hi = (int(x) for x in torch.aminmax(t))
                if hi == 0 and lo == 0:
                    continue
                if lo < 0 or hi > maxn:
                    if check:
                        self._raise_unknown(seg)
                    t = torch.where((t < 0) | (t > maxn), 0, t)
                col = self._plut.index_select(0, t.reshape(-1)).view(B, S)
                if check and int(col.max()) > L:
                    self._raise_unknown(seg)
                planes.append(col)
        return planes

    def _raise_unknown(self, seg: SegBatch) -> None:
        """Raise the UnknownLabel of find_unknown_label over the tallied pixel categories (the rare path)."""
        known = torch.zeros(max(self.known, default=0) + 1, dtype=torch.bool, device=self.device)
        known[torch.tensor(self.known, dtype=torch.long, device=self.device)] = True
        raise find_unknown_label(SegBatch(pixel={c: seg.pixel[c] for c in self.pixel_categories}), known)

    def _pixel_keys(self, B: int, S: int, planes: list) -> tuple:
        """(key [B*S], packed): one integer per pixel, equal for two pixels exactly when they are of
        the same image and carry the same columns. packed: key = b * (L+1)^K + sum_k col_k *
        (L+1)^(K-1-k) (int32 when it fits, as it sorts faster); past _KEY_LIMIT the key is
        re-numbered by torch.unique (packed False), which keeps images apart."""
        L, d = self.n_labels, self.device
        dt = torch.int32 if B * (L + 1) ** len(planes) < (1 << 31) else torch.long
        key, kmax, packed = torch.arange(B, dtype=dt, device=d).view(B, 1).expand(B, S), B, True
        for col in planes:
            if kmax * (L + 1) > _KEY_LIMIT:
                key = torch.unique(key, return_inverse=True)[1]
                kmax, packed = int(key.max()) + 1, False
            key = torch.add(col if col.dtype == dt else col.to(dt), key, alpha=L + 1)
            kmax *= L + 1
        return key.reshape(-1), packed

    def _batch_labels(self, B: int, S: int, seg: SegBatch) -> tuple:
        """The labels of a batch as label combinations, per image: (Z [B, L + 1] bool image-level
        labels, column L = none; cid [B*S] long, the combination id of flat pixel b * S + p; img [nc],
        the image of each id; cols [nc, K] its label columns, L = none, each label at most once and
        none that the image carries image-wide; npix [nc] pixels per id). The K columns of a pixel
        are packed into one key (_pixel_keys), so the mask entries are joined with one id per pixel,
        not K columns."""
        L, d = self.n_labels, self.device
        Z = torch.zeros(B, L + 1, dtype=torch.bool, device=d)
        for c in self.image_level_categories:  # deduplicated by scatter
            cols = self._columns(seg.image_level[c])
            Z.scatter_(1, torch.where(cols < 0, L, cols), True)
        Z[:, L] = False
        planes = self._label_planes(B, S, seg)
        key, packed = self._pixel_keys(B, S, planes)
        ukey, cid, npix = unique_runs(key)
        K = len(planes)
        if packed:  # decode the columns of each id from its key
            ukey = ukey.long()
            img = ukey // (L + 1) ** K
            cols = (
                torch.stack([ukey // (L + 1) ** (K - 1 - k) % (L + 1) for k in range(K)], 1)
                if K
                else ukey.new_empty(ukey.numel(), 0)
            )
        else:
            rep = torch.empty(ukey.numel(), dtype=torch.long, device=d)
            rep.scatter_(0, cid, torch.arange(B * S, device=d))  # one pixel of each id (all alike)
            img = rep // S
            cols = (
                torch.stack([p.reshape(-1).index_select(0, rep) for p in planes], 1).long()
                if K
                else rep.new_empty(rep.numel(), 0)
            )
        cols = torch.where(torch.gather(Z[img], 1, cols), L, cols)  # a label carried image-wide covers the image
        for k in range(1, K):  # the same label on two layers of a pixel counts once
            ck = cols[:, k]
            for j in range(k):
                ck.masked_fill_(ck == cols[:, j], L)
        return Z, cid, img, cols, npix

    def _accumulate(self, B: int, U: int, S: int, seg: SegBatch, ent_bu: torch.Tensor, ent_p: torch.Tensor) -> None:
        """Count a batch given its mask cells: entry i is image/unit ent_bu[i] = b * U + u at pixel ent_p[i]."""
        lab = self._batch_labels(B, S, seg)
        counter = _PairCounter(lab[3].shape[0] * U, self.device)
        for i0 in range(0, ent_bu.numel(), _MAX_JOIN):  # bounded temporaries for dense masks
            bu, p = ent_bu[i0 : i0 + _MAX_JOIN], ent_p[i0 : i0 + _MAX_JOIN]
            b = bu // U
            counter.add(lab[1][b * S + p] * U + (bu - b * U))
        self._count(B, U, S, lab, counter)

    def _count(self, B: int, U: int, S: int, lab: tuple, counter: "_PairCounter") -> None:
        """Add a batch's counts: ``lab`` from _batch_labels, ``counter`` the mask pixels per
        (combination id * U + unit); every (combination, unit) pair is expanded to its K label columns,
        the "none" entries in a spare column (label L, category C) that is dropped."""
        d, L, C = self.device, self.n_labels, len(self.categories)
        Z, _, img, cols, npix = lab
        K = cols.shape[1]
        key, w = counter.result()
        ci, uu = key // U, key % U
        bu = img[ci] * U + uu  # (image, unit) of each (combination, unit) pair
        mcount = torch.zeros(B * U, dtype=torch.long, device=d).index_add_(0, bu, w).view(B, U)  # mask sizes
        Z = Z[:, :L]
        self.G += torch.zeros(L + 1, dtype=torch.long, device=d).index_add_(
            0, cols.reshape(-1), npix.repeat_interleave(K)
        )[:L]
        zb, zl = Z.nonzero(as_tuple=True)
        self.G.index_add_(0, zl, torch.full_like(zl, S))
        self.A_all += mcount.sum(0)
        # categories present per image (by the primary category of the labels carried); slot C = none
        has_img = torch.bincount(zb * C + self._prim[zl], minlength=B * C).view(B, C) > 0
        pc = torch.cat([self._prim, self._prim.new_tensor([C])])[cols]  # [nc, K]; column L -> slot C
        has_pix = torch.zeros(B * (C + 1), dtype=torch.bool, device=d)
        has_pix[((img * (C + 1)).unsqueeze(1) + pc).reshape(-1)] = True
        has_pix = has_pix.view(B, C + 1)[:, :C]
        self.A_original += (mcount.unsqueeze(2) * (has_img | has_pix).unsqueeze(1)).sum(0)
        # image-level intersections: the whole mask of (b, u) meets label l
        self.I.index_add_(1, zl, mcount[zb].t().contiguous())
        # pixel-level intersections and the "lite" presence flags
        inside = torch.zeros(B * U * (C + 1), dtype=torch.bool, device=d)
        I = torch.zeros(U * (L + 1), dtype=torch.long, device=d)
        step = max(1, _MAX_JOIN // max(K, 1))
        for i0 in range(0, w.numel() if K else 0, step):  # bounded memory: pairs x K at most _MAX_JOIN
            c_, u_, b_, w_ = ci[i0 : i0 + step], uu[i0 : i0 + step], bu[i0 : i0 + step], w[i0 : i0 + step]
            I.index_add_(0, ((u_ * (L + 1)).unsqueeze(1) + cols[c_]).reshape(-1), w_.repeat_interleave(K))
            inside[((b_ * (C + 1)).unsqueeze(1) + pc[c_]).reshape(-1)] = True
        self.I += I.view(U, L + 1)[:, :L]
        inside = inside.view(B, U, C + 1)[:, :, :C] | has_img.unsqueeze(1)
        self.A_lite += (mcount.unsqueeze(2) * inside).sum(0)
        self.images += B

    # ------------------------------------------------------------------ results
    def activation(self, union: str = "original") -> torch.Tensor:
        """A per (unit, category) [U, C] for the union rule (for 'all' every column is A_all)."""
        if union not in UNIONS:
            raise ValueError(f"union must be one of {UNIONS}, got {union!r}")
        if self.I is None:
            raise ValueError("Tally has seen no images")
        if union == "original":
            return self.A_original
        if union == "lite":
            return self.A_lite
        return self.A_all.unsqueeze(1).expand(-1, len(self.categories))

    def iou(self, union: str = "original") -> torch.Tensor:
        """IoU [U, L] (float64) = I / (A_primary + G - I), 0 where the union is 0."""
        return iou_from_counts(self.I, self.activation(union)[:, self._prim], self.G)

    def merge(self, other: "Tally") -> None:
        """Add another shard's counts (same labels and categories)."""
        self.same_as(other)
        if other.I is None:
            return
        if self.I is None:
            self._alloc(other.units)
        if other.units != self.units:
            raise ValueError(f"cannot merge a Tally of {other.units} units into one of {self.units}")
        for name in COUNTS:
            getattr(self, name).add_(getattr(other, name).to(self.device))
        self.images += other.images

    def take_counts(self) -> dict:
        """The counts added since the last call ({name: tensor} of ``sum_keys``, "images" an int),
        and zero them: a batch's share, to be added elsewhere with :meth:`add_counts` (the tally is
        a sum over images, so shares add up to the same integers in any order). I is sent as int32
        when every entry fits (one batch's counts are at most B x sh x sw)."""
        if self.I is None:
            return {"images": 0}
        out = {"images": self.images}
        for name in COUNTS:
            x = getattr(self, name)
            small = x.numel() == 0 or int(x.max()) < (1 << 31)
            out[name] = x.to(torch.int32) if small else x.clone()
        self._alloc(self.units)
        self.images = 0
        return out

    def add_counts(self, counts: dict) -> None:
        """Add a share from :meth:`take_counts` of a Tally over the same labels and categories.
        Raises ValueError for a share of another number of units or labels."""
        if counts.get("images", 0) == 0 and "I" not in counts:
            return
        U, L = counts["I"].shape
        if self.I is None:
            self._alloc(U)
        if (U, L) != (self.units, self.n_labels):
            raise ValueError(
                f"counts of {U} units x {L} labels cannot be added to a tally of "
                f"{self.units} units x {self.n_labels} labels"
            )
        for name in COUNTS:
            getattr(self, name).add_(counts[name].to(self.device, torch.long))
        self.images += int(counts["images"])

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict(d)
        self.images = int(self.images)

    def _loaded(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.long)
