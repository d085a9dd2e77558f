"""Tally: intersection, ground-truth and activation counts of unit masks against labels.

Vectorised: the mask entries (image, unit, pixel) are joined with the per-pixel label
columns and counted with one bincount over packed (unit, label) indices; image-level labels
use per-(image, unit) mask sizes. Nothing loops over units or labels in Python.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from broden_builder.torch_dataset import SegBatch

from .upsample import SEPARABLE, bands, plane_taps, relative_margin, upsample

UNIONS = ("original", "lite", "all")

# bound on (mask entries x label layers) joined at once; larger batches are split by image
_MAX_JOIN = 1 << 24


def _segmentation_size(acts: torch.Tensor, seg: SegBatch, size) -> tuple:
    """(sh, sw) of the batch's planes, or ``size`` when it has no pixel category; checks acts is 4-D."""
    if acts.dim() != 4:
        raise ValueError(f"activations must be [B, U, h, w], got shape {tuple(acts.shape)}")
    size = seg.size or (tuple(size) if size is not None else None)
    if size is None:
        raise ValueError("SegBatch has no pixel category: pass size=(sh, sw) to add_activations")
    return size


def _hot_cells(acts: torch.Tensor, T: torch.Tensor) -> tuple:
    """(maps [B*U, h, w], hot [B*U, h, w] bool, sel [P]): the cells that may set a mask pixel and the maps
    with any. An interpolated value is a convex combination of its tile's corners c_i, and its float
    rounding is bounded term by term, so it is at most max_i (c_i + |c_i| * margin): a tile can pass T only
    if one of its corners has c + |c| * margin > T. The margin is per cell, so a unit with T = 0 skips the
    tiles of its exact zeros."""
    B, U, h, w = acts.shape
    maps = acts.reshape(B * U, h, w)
    hot = (maps + maps.abs() * relative_margin(acts.dtype)) > T.repeat(B).view(-1, 1, 1)
    return maps, hot, hot.reshape(B * U, -1).any(1).nonzero().squeeze(1)


class Tally:
    """Integer counts for IoU under all three union rules (see BRODEN_FORMAT.md, last section).

    ``labels``: global label numbers in column order. ``categories``: the categories tallied
    (columns of A_original / A_lite). ``primary_category[number]`` must be one of them.
    Counts (int64): I[U, L], G[L], A_original[U, C], A_lite[U, C], A_all[U], images.
    A label counts once per pixel even if several layers or categories carry it; image-level
    labels cover the whole plane; label 0 and numbers not in ``labels`` are ignored.
    """

    reduction = "sum"  # see dissect.stats.protocol
    sum_keys = ("I", "G", "A_original", "A_lite", "A_all", "images")

    def __init__(self, labels: Sequence[int], categories: Sequence[str], image_level_categories: Iterable[str],
                 primary_category: Mapping[int, str], device="cpu", units: int = None):
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
                raise ValueError(f"label {n}: primary category {c!r} is not one of the tallied categories {self.categories}")
            prim.append(cat_index[c])
        self.primary = [self.categories[i] for i in prim]
        self.device = torch.device(device)
        self.units = units
        maxn = max(self.labels, default=0)
        self._lut = torch.full((maxn + 1,), -1, dtype=torch.long)
        self._lut[torch.tensor(self.labels, dtype=torch.long)] = torch.arange(len(self.labels))
        self._prim = torch.tensor(prim, dtype=torch.long)
        self._lut, self._prim = self._lut.to(self.device), self._prim.to(self.device)
        self.images = 0
        self.tiles_evaluated = 0  # tiles the last add_activations interpolated (diagnostic)
        self.I = self.G = self.A_original = self.A_lite = self.A_all = None
        if units is not None:
            self._alloc(units)

    # ------------------------------------------------------------------ setup
    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def _alloc(self, units: int) -> None:
        L, C, d = self.n_labels, len(self.categories), self.device
        z = lambda *s: torch.zeros(s, dtype=torch.long, device=d)
        self.units = units
        self.I, self.G = z(units, L), z(L)
        self.A_original, self.A_lite, self.A_all = z(units, C), z(units, C), z(units)

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
                raise ValueError(f"SegBatch: pixel category {c!r} is {where} (pixel categories given: {list(seg.pixel)})")
            t = seg.pixel[c]
            if t.dim() != 4 or t.shape[0] != b or tuple(t.shape[2:]) != size:
                raise ValueError(f"SegBatch: category {c!r} has shape {tuple(t.shape)}, expected [{b}, layers, {size[0]}, {size[1]}]")
        for c in self.image_level_categories:
            if c not in seg.image_level:
                where = "a pixel category" if c in seg.pixel else "missing"
                raise ValueError(f"SegBatch: image-level category {c!r} is {where} (image-level given: {list(seg.image_level)})")
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
        d, S = self.device, sh * sw
        T = thresholds.detach().to(d, acts_up.dtype).reshape(1, U, 1)
        acts_up = acts_up.detach().to(d).reshape(B, U, S)
        # bound the size of the nonzero() output: at most _MAX_JOIN mask cells per chunk of images
        step = max(1, _MAX_JOIN // (U * S))
        ent_bu, ent_p = [], []
        for b0 in range(0, B, step):
            flat = (acts_up[b0: b0 + step] > T).reshape(-1).nonzero().squeeze(1)
            ent_bu.append(flat // S + b0 * U)
            ent_p.append(flat % S)
        self._accumulate(B, U, S, seg, torch.cat(ent_bu), torch.cat(ent_p))

    def add_activations(self, acts: torch.Tensor, thresholds: torch.Tensor, seg: SegBatch, mode: str = "bilinear",
                        field=None, input_size=None, size=None) -> None:
        """Count one batch from layer-resolution acts [B, U, h, w]: exactly the counts of
        ``add(upsample(acts, seg size, mode, field, input_size), thresholds, seg)``, but
        upsampling only where the mask can be set. Two-tap interpolation (bilinear, nearest,
        field) splits the plane into tiles that each depend on a 2 x 2 block of cells; a tile
        whose cells are all below T (less a rounding margin) has no mask pixel, so only the
        other tiles are evaluated, with the same arithmetic as upsample(). ``size`` (sh, sw) is
        needed only when the batch has no pixel category. bicubic falls back to add()."""
        size = _segmentation_size(acts, seg, size)
        if mode not in SEPARABLE:
            return self.add(upsample(acts, size, mode, field=field, input_size=input_size), thresholds, seg)
        B, U, h, w = acts.shape
        self._check_batch(B, U, thresholds, seg, tuple(size))
        d, SH, SW = self.device, int(size[0]), int(size[1])
        acts = acts.detach().to(d)
        T = thresholds.detach().to(d, acts.dtype).reshape(U)
        rows, cols = plane_taps((h, w), (SH, SW), mode, field, input_size)
        maps, hot, sel = _hot_cells(acts, T)
        empty = torch.empty(0, dtype=torch.long, device=d)
        self.tiles_evaluated = 0
        if sel.numel() == 0:
            return self._accumulate(B, U, SH * SW, seg, empty, empty)
        by0, by1, ymem = (t.to(d) for t in bands(rows))
        bx0, bx1, xmem = (t.to(d) for t in bands(cols))
        hs = hot[sel]
        hrow = hs[:, by0, :] | hs[:, by1, :]  # [P, nby, w]
        htile = hrow[:, :, bx0] | hrow[:, :, bx1]  # [P, nby, nbx]
        # each tile (map, row band, column band) reads one 2 x 2 block of cells; its values are
        # computed exactly as upsample() does: rows first, then columns
        rw0, rw1 = rows.w0.to(d, acts.dtype), rows.w1.to(d, acts.dtype)
        cw0, cw1 = cols.w0.to(d, acts.dtype), cols.w1.to(d, acts.dtype)
        tp, ty, tx = htile.nonzero(as_tuple=True)
        self.tiles_evaluated = int(tp.numel())
        my, mx = ymem.shape[1], xmem.shape[1]
        step = max(1, _MAX_JOIN // (my * mx))
        cells = maps.reshape(-1)  # the four corners are gathered by flat index (no copy of whole maps)
        y0w, y1w = by0 * w, by1 * w
        ypad, xpad = bool((ymem < 0).any()), bool((xmem < 0).any())
        ent_bu, ent_p = [], []
        for t0 in range(0, tp.numel(), step):
            p_, by, bx = sel[tp[t0: t0 + step]], ty[t0: t0 + step], tx[t0: t0 + step]
            y_, x_ = ymem[by], xmem[bx]  # [n, my], [n, mx] output rows / columns, -1 = padding
            yc, xc = y_.clamp(min=0), x_.clamp(min=0)
            base = p_ * (h * w)
            r0b, r1b = base + y0w[by], base + y1w[by]
            c0, c1 = bx0[bx], bx1[bx]
            w0y, w1y = rw0[yc], rw1[yc]
            r0 = cells[r0b + c0].unsqueeze(1) * w0y + cells[r1b + c0].unsqueeze(1) * w1y  # [n, my]: column i0x
            r1 = cells[r0b + c1].unsqueeze(1) * w0y + cells[r1b + c1].unsqueeze(1) * w1y  # column i1x
            rr = r0.unsqueeze(2) * cw0[xc].unsqueeze(1) + r1.unsqueeze(2) * cw1[xc].unsqueeze(1)
            m = rr > T[p_ % U].view(-1, 1, 1)
            if ypad:  # bands shorter than the longest one are padded with -1
                m &= (y_ >= 0).unsqueeze(2)
            if xpad:
                m &= (x_ >= 0).unsqueeze(1)
            k, iy, ix = m.nonzero(as_tuple=True)
            ent_bu.append(p_[k])
            ent_p.append(yc[k, iy] * SW + xc[k, ix])
        self._accumulate(B, U, SH * SW, seg, torch.cat(ent_bu) if ent_bu else empty, torch.cat(ent_p) if ent_p else empty)

    def _pixel_columns(self, B: int, S: int, seg: SegBatch, Z: torch.Tensor) -> torch.Tensor:
        """[B, K, S] column numbers of the pixel labels (int16 while they fit), L = none; a label
        appears at most once per pixel and not at all where the image carries it image-wide."""
        L, maxn = self.n_labels, self._lut.numel() - 1
        cdt = torch.int16 if L < (1 << 15) - 1 else torch.int32
        lut = torch.where(self._lut < 0, L, self._lut).to(cdt)  # number -> column, L for untallied numbers
        lut[0] = L
        planes = []
        for c in self.pixel_categories:
            t = seg.pixel[c]
            if t.shape[1]:
                t = t.reshape(B, -1, S)
                planes.append(lut[torch.where((t < 0) | (t > maxn), 0, t)])
        if not planes:
            return torch.empty(B, 0, S, dtype=cdt, device=self.device)
        pix = torch.cat(planes, 1) if len(planes) > 1 else planes[0]
        K = pix.shape[1]
        if bool(Z.any()):  # a label carried image-wide already covers every pixel of that image
            pix = pix.masked_fill(torch.gather(Z, 1, pix.reshape(B, K * S).long()).reshape(B, K, S), L)
        for k in range(1, K):  # the same label on two layers of a pixel counts once (K is small: pairwise)
            pk = pix[:, k]
            for j in range(k):
                pk.masked_fill_(pk == pix[:, j], L)
        keep = (pix < L).any(2).any(0)  # drop layers that are empty in the whole batch
        return pix if bool(keep.all()) else pix[:, keep]

    def _accumulate(self, B: int, U: int, S: int, seg: SegBatch, ent_bu: torch.Tensor, ent_p: torch.Tensor) -> None:
        """Count a batch given its mask cells: entry i is image/unit ent_bu[i] = b * U + u at pixel ent_p[i]."""
        d, L, C = self.device, self.n_labels, len(self.categories)
        mcount = torch.bincount(ent_bu, minlength=B * U).view(B, U)  # mask size per (image, unit)

        # image-level labels: Z[b, l] (deduplicated by scatter); column L means "none"
        Z = torch.zeros(B, L + 1, dtype=torch.bool, device=d)
        for c in self.image_level_categories:
            cols = self._columns(seg.image_level[c])
            Z.scatter_(1, torch.where(cols < 0, L, cols), True)
        Z[:, L] = False
        pix = self._pixel_columns(B, S, seg, Z)  # [B, K, S], one entry per (pixel, label)
        K = pix.shape[1]
        Z = Z[:, :L]

        self.G += torch.bincount(pix.reshape(-1), minlength=L + 1)[:L]
        zb, zl = Z.nonzero(as_tuple=True)
        self.G.index_add_(0, zl, torch.full_like(zl, S))
        self.A_all += mcount.sum(0)

        # categories present per image (by the primary category of the labels carried); slot C = none
        has_img = torch.bincount(zb * C + self._prim[zl], minlength=B * C).view(B, C) > 0
        primx = torch.cat([self._prim, self._prim.new_tensor([C])])  # column L ("none") -> slot C
        key = primx[pix.long()] + (torch.arange(B, device=d) * (C + 1)).view(B, 1, 1)
        has_pix = (torch.bincount(key.reshape(-1), minlength=B * (C + 1)).view(B, C + 1) > 0)[:, :C]
        self.A_original += (mcount.unsqueeze(2) * (has_img | has_pix).unsqueeze(1)).sum(0)

        # image-level intersections: the whole mask of (b, u) meets label l
        self.I.index_add_(1, zl, mcount[zb].t().contiguous())

        # pixel-level intersections and the "lite" presence flags: every (mask cell, layer) pair is
        # counted, the "none" entries in a spare column (label L, category C) that is dropped
        inside = has_img.unsqueeze(1).expand(B, U, C).clone()
        if K and ent_bu.numel():
            pixT = pix.transpose(1, 2).reshape(B * S, K)  # labels of flat pixel b * S + p
            step = max(1, _MAX_JOIN // K)
            for i0 in range(0, ent_bu.numel(), step):  # bounded memory for dense masks
                bu, p = ent_bu[i0: i0 + step], ent_p[i0: i0 + step]
                b = bu // U
                labs = pixT[b * S + p].long()  # [n, K]
                ui = ((bu - b * U) * (L + 1)).unsqueeze(1) + labs
                self.I += torch.bincount(ui.reshape(-1), minlength=U * (L + 1)).view(U, L + 1)[:, :L]
                bc = (bu * (C + 1)).unsqueeze(1) + primx[labs]
                inside |= (torch.bincount(bc.reshape(-1), minlength=B * U * (C + 1)).view(B, U, C + 1) > 0)[:, :, :C]
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
        A = self.activation(union)[:, self._prim]  # [U, L]
        I = self.I
        den = (A + self.G.unsqueeze(0) - I).double()
        return torch.where(den > 0, I.double() / den.clamp(min=1), torch.zeros_like(den))

    def merge(self, other: "Tally") -> None:
        """Add another shard's counts (same labels and categories)."""
        if (other.labels, other.categories, other.primary) != (self.labels, self.categories, self.primary):
            raise ValueError("cannot merge Tally objects over different labels, categories or primary categories")
        if other.I is None:
            return
        if self.I is None:
            self._alloc(other.units)
        if other.units != self.units:
            raise ValueError(f"cannot merge a Tally of {other.units} units into one of {self.units}")
        for name in ("I", "G", "A_original", "A_lite", "A_all"):
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
        for name in ("I", "G", "A_original", "A_lite", "A_all"):
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
            raise ValueError(f"counts of {U} units x {L} labels cannot be added to a tally of "
                             f"{self.units} units x {self.n_labels} labels")
        for name in ("I", "G", "A_original", "A_lite", "A_all"):
            getattr(self, name).add_(counts[name].to(self.device, torch.long))
        self.images += int(counts["images"])

    def state_dict(self) -> dict:
        t = lambda x: None if x is None else x.cpu()
        return {"labels": list(self.labels), "categories": list(self.categories), "primary": list(self.primary),
                "units": self.units, "images": self.images, "I": t(self.I), "G": t(self.G),
                "A_original": t(self.A_original), "A_lite": t(self.A_lite), "A_all": t(self.A_all)}

    def load_state_dict(self, d: dict) -> None:
        if (list(d["labels"]), list(d["categories"]), list(d["primary"])) != (self.labels, self.categories, self.primary):
            raise ValueError("Tally state is for different labels, categories or primary categories")
        self.units, self.images = d["units"], int(d["images"])
        for name in ("I", "G", "A_original", "A_lite", "A_all"):
            x = d[name]
            setattr(self, name, None if x is None else x.to(self.device, torch.long))

    def to(self, device) -> "Tally":
        self.device = torch.device(device)
        self._lut, self._prim = self._lut.to(self.device), self._prim.to(self.device)
        for name in ("I", "G", "A_original", "A_lite", "A_all"):
            x = getattr(self, name)
            if x is not None:
                setattr(self, name, x.to(self.device))
        return self
