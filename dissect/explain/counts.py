"""The counts a compositional search needs, gathered in one pass over the images.

Every count a formula's IoU needs is a sum over pixels of products of label indicators (and,
for the intersection, of the unit's mask). Pixels carrying the same set of labels are
interchangeable in such sums, so pixels are grouped into *atoms*: the distinct label sets
that occur (image-level labels included, since they cover the plane). An atom holds its pixel
count ``w``; a unit's mask is reduced to how many of its pixels fall in each atom. A formula is
then a boolean over atoms and |F| = sum w[F], |F & M_u| = sum c_u[F]: exact, and on a synthetic
or Broden store there are far fewer atoms than pixels (1,000 images at 112 x 112 = 12.5M pixels
become some tens of thousands of atoms). This is our own code because no library computes
label-set classes of segmentation planes.

Shapes: K atoms, L label columns, U units, E (unit, atom) entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class MaskCounts:
    """Atoms and unit counts (int64 tensors on one device).

    ``w`` [K]: pixels per atom. ``al_atom``, ``al_label`` [P]: the (atom, label column) pairs
    (labels of each atom). ``bits`` uint8 [K, ceil(L / 8)]: the same as packed membership bits
    (bit c & 7 of byte c >> 3). ``e_unit``, ``e_atom``, ``e_count`` [E]: pixels of unit
    e_unit's mask in atom e_atom (entries with e_count > 0, sorted by unit then atom).
    ``n_labels`` L, ``n_units`` U. ``images``: how many images were counted.
    """

    w: torch.Tensor
    al_atom: torch.Tensor
    al_label: torch.Tensor
    bits: torch.Tensor
    e_unit: torch.Tensor
    e_atom: torch.Tensor
    e_count: torch.Tensor
    n_labels: int
    n_units: int
    images: int = 0

    @property
    def n_atoms(self) -> int:
        return int(self.w.numel())

    def label_area(self) -> torch.Tensor:
        """|X| per label column [L]."""
        return torch.zeros(self.n_labels, dtype=torch.long, device=self.w.device).index_add_(
            0, self.al_label, self.w[self.al_atom]
        )

    def mask_size(self) -> torch.Tensor:
        """|M_u| per unit [U]."""
        return torch.zeros(self.n_units, dtype=torch.long, device=self.w.device).index_add_(
            0, self.e_unit, self.e_count
        )

    def to(self, device) -> "MaskCounts":
        f = lambda t: t.to(device)  # noqa: E731
        return MaskCounts(
            f(self.w),
            f(self.al_atom),
            f(self.al_label),
            f(self.bits),
            f(self.e_unit),
            f(self.e_atom),
            f(self.e_count),
            self.n_labels,
            self.n_units,
            self.images,
        )

    @classmethod
    def from_dense(cls, label_masks: np.ndarray, unit_masks: np.ndarray) -> "MaskCounts":
        """From bool label masks [L, ...] and unit masks [U, ...] over the same pixels (tests,
        small problems): every pixel is counted once."""
        lm = np.asarray(label_masks, dtype=bool)
        um = np.asarray(unit_masks, dtype=bool)
        L, U = lm.shape[0], um.shape[0]
        lm = lm.reshape(L, -1)
        um = um.reshape(U, -1)
        if lm.shape[1] != um.shape[1]:
            raise ValueError(f"label masks have {lm.shape[1]} pixels, unit masks {um.shape[1]}")
        W = n_words(L)
        packed = np.zeros((lm.shape[1], W * 8), dtype=np.uint8)
        packed[:, : -(-L // 8) if L else 0] = np.packbits(lm.T, axis=1, bitorder="little")
        keys = torch.from_numpy(packed.view("<i8").astype(np.int64))
        b = AtomBuilder(L)
        pu, pp = np.nonzero(um.T)  # pixel, unit: an entry per mask pixel
        b.add(keys, torch.from_numpy(pp), torch.from_numpy(pu), images=1)
        return b.finish(U)


def n_words(n_labels: int) -> int:
    """64-bit words of a label-set key."""
    return max(1, -(-int(n_labels) // 64))


def pixel_label_keys(
    seg, columns: torch.Tensor, n_labels: int, pixel_categories: Sequence[str], image_level_categories: Sequence[str]
) -> torch.Tensor:
    """The label set of every pixel of a SegBatch as bits: LongTensor [B * S, W] (W = n_words),
    bit c & 63 of word c >> 6 set when the pixel carries label column c. ``columns[number]`` is
    the column of a global label number, -1 when not counted (0 = unlabeled is never counted).
    Image-level labels are carried by every pixel of their image."""
    d = columns.device
    size = seg.size
    B = seg.batch_size
    S = size[0] * size[1] if size else 1
    W = n_words(n_labels)
    maxn = columns.numel() - 1
    one = torch.ones((), dtype=torch.long, device=d)

    def set_bits(keys: torch.Tensor, numbers: torch.Tensor) -> None:
        x = columns[numbers.clamp(0, maxn)].masked_fill((numbers < 0) | (numbers > maxn), -1)
        bit = torch.where(x >= 0, one << (x & 63), 0)
        word = x >> 6
        for w in range(W):  # words of the key, not pixels
            keys[:, w] |= torch.where(word == w, bit, 0)

    keys = torch.zeros(B, W, S, dtype=torch.long, device=d)
    for c in pixel_categories:
        t = seg.pixel.get(c)
        if t is not None:
            for j in range(t.shape[1]):
                set_bits(keys, t[:, j].reshape(B, S))
    img = torch.zeros(B, W, 1, dtype=torch.long, device=d)
    for c in image_level_categories:
        t = seg.image_level.get(c)
        if t is not None:
            for j in range(t.shape[1]):
                set_bits(img, t[:, j].reshape(B, 1))
    keys |= img
    return keys.permute(0, 2, 1).reshape(B * S, W)


class AtomBuilder:
    """Streams batches of (pixel label-set keys, unit mask pixels) into MaskCounts.

    Atom ids are given in order of first appearance, so the result does not depend on how the
    images are batched.
    """

    def __init__(self, n_labels: int):
        self.n_labels = int(n_labels)
        self.words = n_words(n_labels)
        self._ids: dict = {}  # key (tuple of words) -> atom id
        self._keys: list = []
        self._w: list = []  # per batch: (atom ids, counts)
        self._entries: list = []  # per batch: (unit * 2^32 + atom keys, counts)
        self.images = 0

    def add(self, keys: torch.Tensor, ent_unit: torch.Tensor, ent_pixel: torch.Tensor, images: int = 0) -> None:
        """``keys`` [P, W]: label-set keys of P pixels (pixel_label_keys); ``ent_unit``,
        ``ent_pixel`` [n]: pixel ent_pixel (row of keys) is in unit ent_unit's mask."""
        keys = keys.cpu()
        P = keys.shape[0]
        if keys.shape[1] != self.words:
            raise ValueError(f"keys have {keys.shape[1]} words, expected {self.words} for {self.n_labels} labels")
        # a compact id per distinct key, one word at a time (no per-pixel Python)
        local = torch.unique(keys[:, 0], return_inverse=True)[1]
        for j in range(1, self.words):
            inv = torch.unique(keys[:, j], return_inverse=True)[1]
            local = torch.unique(local * (int(inv.max()) + 1) + inv, return_inverse=True)[1]
        n_local = int(local.max()) + 1 if P else 0
        first = torch.full((n_local,), P, dtype=torch.long).scatter_reduce_(0, local, torch.arange(P), reduce="amin")
        order = torch.argsort(first)  # local ids in order of first pixel
        reps = keys[first[order]].tolist()
        glob = torch.empty(n_local, dtype=torch.long)
        ids = self._ids
        out = []
        for row in reps:  # one step per distinct label set of the batch
            key = tuple(row)
            a = ids.get(key)
            if a is None:
                a = ids[key] = len(self._keys)
                self._keys.append(key)
            out.append(a)
        glob[order] = torch.tensor(out, dtype=torch.long)
        cnt = torch.bincount(local, minlength=n_local)
        self._w.append((glob, cnt))
        if ent_unit.numel():
            # (unit, local atom) pairs counted densely: units x distinct label sets of the batch
            eu = ent_unit.cpu().long()
            pair = torch.bincount(eu * n_local + local[ent_pixel.cpu().long()], minlength=(int(eu.max()) + 1) * n_local)
            nz = pair.nonzero().squeeze(1)
            self._entries.append(((nz // n_local) * (1 << 32) + glob[nz % n_local], pair[nz]))
        self.images += int(images)

    def finish(self, n_units: int, device="cpu") -> MaskCounts:
        K, W = len(self._keys), self.words
        w = torch.zeros(K, dtype=torch.long)
        for ids, cnt in self._w:
            w.index_add_(0, ids, cnt)
        words = np.array(self._keys, dtype=np.int64).reshape(K, W)
        # little-endian words as bytes: byte c >> 3, bit c & 7 holds label column c
        bits = np.ascontiguousarray(words.astype("<i8")).view(np.uint8).reshape(K, W * 8)
        nb = max(1, -(-self.n_labels // 8))
        bits = bits[:, :nb]
        member = np.unpackbits(bits, axis=1, bitorder="little")[:, : self.n_labels] if K else np.zeros((0, 0), np.uint8)
        al_atom, al_label = np.nonzero(member)  # sorted by atom, then label
        if self._entries:
            keys = torch.cat([k for k, _ in self._entries])
            cnts = torch.cat([c for _, c in self._entries])
            ukey, inv = torch.unique(keys, return_inverse=True)
            cnt = torch.zeros(ukey.numel(), dtype=torch.long).index_add_(0, inv, cnts)
        else:
            ukey = cnt = torch.empty(0, dtype=torch.long)
        e_unit, e_atom = ukey >> 32, ukey & ((1 << 32) - 1)
        if e_unit.numel() and int(e_unit.max()) >= n_units:
            raise ValueError(f"unit {int(e_unit.max())} out of range for {n_units} units")
        d = torch.device(device)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a)).to(d)  # noqa: E731
        return MaskCounts(
            w.to(d),
            t(al_atom.astype(np.int64)),
            t(al_label.astype(np.int64)),
            t(bits.reshape(K, nb)),
            e_unit.to(d),
            e_atom.to(d),
            cnt.to(d),
            self.n_labels,
            int(n_units),
            self.images,
        )


__all__ = ["MaskCounts", "AtomBuilder", "pixel_label_keys", "n_words"]
