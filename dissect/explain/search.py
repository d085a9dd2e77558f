"""Beam search for compositional explanations, vectorised over units, beam entries and labels.

The search follows compexp (jayelm/compexp, vision/dissection/neuron.py, compute_best_iou):

* IoU of a formula F with unit u's mask M: |F & M| / (|F| + |M| - |F & M|), all counts over
  the whole probe set (every pixel of every image; compexp's ``tally_units`` and ``cmask.area``).
  NOT is the complement over the whole plane; image-level labels cover the plane.
* Seeds: the labels with IoU > 0, best first (ties: lower label column first), at most
  ``beam`` of them. The best seed is the best single label (``single_iou``).
* Each of ``length - 1`` rounds extends every beam formula F by every candidate label X with
  F OR X, F AND X, F AND NOT X (in that order; labels in column order); the pool is the beam
  itself followed by all extensions, and the new beam is the ``beam`` best of the pool. Ties
  keep pool order (compexp sorts with Counter.most_common, which is stable).
* The explanation is the first formula of the final beam.

Differences from compexp, none of which change which formula wins:
* compexp adds 1e-10 to the denominator; here the IoU is 0 when the union is empty and exact
  otherwise, so formulas with equal IoU compare equal (and keep pool order).
* Candidate labels are those present in some image of the probe set (compexp: every label with
  a mask in its catalog, which is the same set); labels never seen can only tie, later.
* compexp's complexity penalty (default 1.0, i.e. none) is not offered.
* Counts come from MaskCounts (pixels grouped by label set) instead of run-length-encoded
  masks; the counts are identical.

Per round the expensive parts are |F & X| for every beam formula F and label X (computed once
per distinct formula over the atoms) and |F & X & M_u| (a scatter over the unit's atoms).
Everything else follows by inclusion-exclusion:
    OR:      |(F|X) & M| = |F&M| + |X&M| - |F&X&M|,   |F|X| = |F| + |X| - |F&X|
    AND:     |F&X&M|,                                  |F&X|
    AND NOT: |F&M| - |F&X&M|,                          |F| - |F&X|
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .counts import MaskCounts
from .formula import AND, AND_NOT, OR, Formula

# bound on elements of the largest temporary per chunk (int64 / float64: 8 bytes each)
_MAX_ELEMS = 1 << 23


@dataclass
class SearchResult:
    """Per unit (0-based u): the best formula and its counts, and the best single label.

    ``labels`` [U, length] label columns (-1 pad), ``ops`` [U, length - 1] op codes (-1 pad),
    ``iou`` [U] float64, ``intersection`` |F & M| [U], ``area`` |F| [U], ``mask_size`` |M| [U],
    ``single_label`` [U] (-1 when no label meets the mask), ``single_iou`` [U].
    ``beams``: the final beam of each unit (list of [(Formula, iou)], best first).
    """

    labels: torch.Tensor
    ops: torch.Tensor
    iou: torch.Tensor
    intersection: torch.Tensor
    area: torch.Tensor
    mask_size: torch.Tensor
    single_label: torch.Tensor
    single_iou: torch.Tensor
    beams: list

    def formula(self, u: int) -> Formula:
        labs = [int(x) for x in self.labels[u].tolist() if x >= 0]
        return Formula(tuple(labs), tuple(int(x) for x in self.ops[u].tolist()[: max(0, len(labs) - 1)]))


def _iou(inter: torch.Tensor, area: torch.Tensor, msize: torch.Tensor) -> torch.Tensor:
    den = msize + area - inter
    return torch.where(
        den > 0, inter.double() / den.clamp(min=1).double(), torch.zeros((), dtype=torch.float64, device=inter.device)
    )


def _member(bits: torch.Tensor, atoms: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """bool: atom ``atoms`` carries label column ``labels`` (broadcast shapes; label -1 -> False)."""
    lab = labels.clamp(min=0)
    byte = bits[atoms, lab >> 3]
    return ((byte.long() >> (lab & 7)) & 1).bool() & (labels >= 0)


def _evaluate(bits: torch.Tensor, atoms: torch.Tensor, labels: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """Formulas (labels [..., n], ops [..., n - 1], -1 pad) at atoms (broadcast with [...])."""
    v = _member(bits, atoms, labels[..., 0])
    for j in range(1, labels.shape[-1]):
        m = _member(bits, atoms, labels[..., j])
        op = ops[..., j - 1]
        v = torch.where(op == OR, v | m, torch.where(op == AND, v & m, torch.where(op == AND_NOT, v & ~m, v)))
    return v


class _Problem:
    """Derived index arrays shared by every round."""

    def __init__(self, c: MaskCounts):
        d = c.w.device
        self.c = c
        self.area_label = c.label_area()
        self.cand = (self.area_label > 0).nonzero().flatten()  # candidate label columns, ascending
        self.nC = int(self.cand.numel())
        cidx = torch.full((c.n_labels,), -1, dtype=torch.long, device=d)
        cidx[self.cand] = torch.arange(self.nC, device=d)
        self.area_c = self.area_label[self.cand]
        self.msize = c.mask_size()
        self.al_c = cidx[c.al_label]  # candidate index of each (atom, label) pair
        K = c.n_atoms
        self.deg = torch.bincount(c.al_atom, minlength=K)  # labels per atom
        self.ptr = torch.zeros(K + 1, dtype=torch.long, device=d)
        self.ptr[1:] = torch.cumsum(self.deg, 0)
        # entries are sorted by unit: entry range of each unit
        self.e_ptr = torch.zeros(c.n_units + 1, dtype=torch.long, device=d)
        self.e_ptr[1:] = torch.cumsum(torch.bincount(c.e_unit, minlength=c.n_units), 0)

    def entry_labels(self, u0: int, u1: int) -> tuple:
        """The (entry, label) pairs of units u0..u1-1: (entry index [n], candidate index [n]),
        built per chunk of units so memory follows the chunk, not the layer."""
        c, d = self.c, self.c.w.device
        lo, hi = int(self.e_ptr[u0]), int(self.e_ptr[u1])
        atoms = c.e_atom[lo:hi]
        edeg = self.deg[atoms]
        el_e = torch.repeat_interleave(torch.arange(lo, hi, device=d), edeg)
        start = torch.zeros_like(edeg)
        if edeg.numel():
            start[1:] = torch.cumsum(edeg, 0)[:-1]
        pos = torch.arange(el_e.numel(), device=d) - start[el_e - lo]
        return el_e, self.al_c[self.ptr[c.e_atom[el_e]] + pos]

    def single(self, u0: int, u1: int) -> torch.Tensor:
        """|X & M_u| [u1 - u0, nC] for candidate labels."""
        c, d = self.c, self.c.w.device
        el_e, el_c = self.entry_labels(u0, u1)
        out = torch.zeros((u1 - u0) * self.nC, dtype=torch.long, device=d)
        out.index_add_(0, (c.e_unit[el_e] - u0) * self.nC + el_c, c.e_count[el_e])
        return out.view(u1 - u0, self.nC)

    def postings(self) -> tuple:
        """Atoms carrying each label column: (ptr [L + 1], atoms [P]) (CSR, atoms ascending)."""
        if not hasattr(self, "_post"):
            c, d = self.c, self.c.w.device
            order = torch.argsort(c.al_label * max(1, c.n_atoms) + c.al_atom)
            ptr = torch.zeros(c.n_labels + 1, dtype=torch.long, device=d)
            ptr[1:] = torch.cumsum(torch.bincount(c.al_label, minlength=c.n_labels), 0)
            self._post = (ptr, c.al_atom[order])
        return self._post

    def formula_label_area(self, labels: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        """|F & X| [n, nC] for formulas labels [n, Lm], ops [n, Lm - 1] (int64, exact).

        A formula can only hold on atoms carrying its first label or a label it ORs in, so each
        distinct formula is evaluated on those atoms alone (the label's posting lists), and
        w[k] is added to every label of each atom k where it holds."""
        c, d = self.c, self.c.w.device
        n, Lm = labels.shape
        out = torch.zeros(n, self.nC, dtype=torch.long, device=d)
        if n == 0 or c.n_atoms == 0:
            return out
        key = torch.cat([labels, ops], 1)
        uniq, inv = torch.unique(key, dim=0, return_inverse=True)  # beams of many units share formulas
        ul, uo = uniq[:, :Lm], uniq[:, Lm:]
        m = ul.shape[0]
        ptr, post = self.postings()
        # support labels: the first, and each one ORed in (valid labels only)
        sup = torch.zeros(m, Lm, dtype=torch.bool, device=d)
        sup[:, 0] = ul[:, 0] >= 0
        if Lm > 1:
            sup[:, 1:] = (uo[:, : Lm - 1] == OR) & (ul[:, 1:] >= 0)
        lab = ul.clamp(min=0)
        plen = torch.where(sup, ptr[lab + 1] - ptr[lab], 0)  # [m, Lm]
        work = plen.sum(1)  # atoms visited per formula
        res = torch.zeros(m, self.nC, dtype=torch.long, device=d)
        avg_deg = max(1, -(-c.al_atom.numel() // max(1, c.n_atoms)))
        budget = max(1, _MAX_ELEMS // avg_deg)
        f0 = 0
        csum = torch.cumsum(work, 0)
        while f0 < m:
            done = int(csum[f0 - 1]) if f0 else 0
            f1 = int(torch.searchsorted(csum, torch.tensor(done + budget, device=d), right=True))
            f1 = max(f1, f0 + 1)
            self._area_chunk(ul[f0:f1], uo[f0:f1], sup[f0:f1], plen[f0:f1], res[f0:f1], ptr, post)
            f0 = f1
        return res[inv]

    def _area_chunk(self, ul, uo, sup, plen, res, ptr, post) -> None:
        c, d = self.c, self.c.w.device
        m, Lm = ul.shape
        flat = plen.reshape(-1)
        pair = torch.repeat_interleave(torch.arange(m * Lm, device=d), flat)  # (formula, position) of each visit
        if pair.numel() == 0:
            return
        start = torch.zeros_like(flat)
        start[1:] = torch.cumsum(flat, 0)[:-1]
        f, j = pair // Lm, pair % Lm
        lab = ul[f, j]
        atom = post[ptr[lab] + torch.arange(pair.numel(), device=d) - start[pair]]
        # visit each atom once per formula: skip it under a later support label if an earlier one has it
        keep = torch.ones_like(atom, dtype=torch.bool)
        for jj in range(Lm - 1):
            earlier = (j > jj) & sup[f, jj]
            keep &= ~(earlier & _member(c.bits, atom, torch.where(earlier, ul[f, jj], -1)))
        f, atom = f[keep], atom[keep]
        val = _evaluate(c.bits, atom, ul[f], uo[f]).long() * c.w[atom]
        nz = val > 0
        f, atom, val = f[nz], atom[nz], val[nz]
        deg = self.deg[atom]
        rep = torch.repeat_interleave(torch.arange(atom.numel(), device=d), deg)
        st = torch.zeros_like(deg)
        if deg.numel():
            st[1:] = torch.cumsum(deg, 0)[:-1]
        cc = self.al_c[self.ptr[atom[rep]] + torch.arange(rep.numel(), device=d) - st[rep]]
        res.view(-1).index_add_(0, f[rep] * self.nC + cc, val[rep])

    def formula_label_unit(self, u0: int, u1: int, labels: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        """|F_ub & X & M_u| [u1 - u0, B, nC] for beam formulas labels [u1 - u0, B, Lm]."""
        c, d = self.c, self.c.w.device
        n, B = u1 - u0, labels.shape[1]
        lo, hi = int(self.e_ptr[u0]), int(self.e_ptr[u1])
        eu = c.e_unit[lo:hi] - u0
        f = _evaluate(c.bits, c.e_atom[lo:hi].unsqueeze(1), labels[eu], ops[eu])  # [e, B]
        vals = f.long() * c.e_count[lo:hi].unsqueeze(1)
        el_e, el_c = self.entry_labels(u0, u1)
        out = torch.zeros(n * self.nC, B, dtype=torch.long, device=d)
        out.index_add_(0, (c.e_unit[el_e] - u0) * self.nC + el_c, vals[el_e - lo])
        return out.view(n, self.nC, B).transpose(1, 2)


def _stable_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [n, k] of the k largest per row, ties in column order (as a stable sort)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order[:, :k]


class _Beam:
    """The beams of a chunk of n units: label columns as candidate indices ``bl`` [n, B, Lm] and
    ops ``bo`` [n, B, max(Lm - 1, 1)] (-1 pad), counts ``bI`` |F & M|, ``bA`` |F| [n, B] and
    score ``bS`` [n, B] (-1 = empty slot)."""

    def __init__(self, prob: _Problem, u0: int, u1: int, B: int, Lm: int):
        d = prob.c.w.device
        n, nC = u1 - u0, prob.nC
        self.prob, self.u0, self.u1, self.B, self.Lm = prob, u0, u1, B, Lm
        self.neg = torch.tensor(-1.0, dtype=torch.float64, device=d)
        self.msize = prob.msize[u0:u1]
        self.I0 = prob.single(u0, u1)  # |X & M| [n, nC]
        s0 = _iou(self.I0, prob.area_c.unsqueeze(0), self.msize.unsqueeze(1))
        top = _stable_top(s0, min(B, nC)) if nC else torch.zeros(n, 0, dtype=torch.long, device=d)
        self.bl = torch.full((n, B, Lm), -1, dtype=torch.long, device=d)
        self.bo = torch.full((n, B, max(Lm - 1, 1)), -1, dtype=torch.long, device=d)
        self.bI = torch.zeros(n, B, dtype=torch.long, device=d)
        self.bA = torch.zeros(n, B, dtype=torch.long, device=d)
        self.bS = self.neg.expand(n, B).clone()
        k = top.shape[1]
        ts = s0.gather(1, top)
        ok = ts > 0  # compexp seeds only labels with a non-zero IoU
        self.bl[:, :k, 0] = torch.where(ok, top, -1)
        self.bI[:, :k] = torch.where(ok, self.I0.gather(1, top), 0)
        self.bA[:, :k] = torch.where(ok, prob.area_c[top], 0)
        self.bS[:, :k] = torch.where(ok, ts, self.neg)
        # the best single label (column, IoU), -1 / 0 when none meets the mask
        self.single_label = torch.full((n,), -1, dtype=torch.long, device=d)
        self.single_iou = torch.zeros(n, dtype=torch.float64, device=d)
        if k:
            self.single_label = torch.where(ok[:, 0], prob.cand[top[:, 0]], -1)
            self.single_iou = torch.where(ok[:, 0], ts[:, 0], torch.zeros((), dtype=torch.float64, device=d))

    def columns(self) -> torch.Tensor:
        """Beam labels as label columns [n, B, Lm] (-1 pad)."""
        return torch.where(self.bl >= 0, self.prob.cand[self.bl.clamp(min=0)], -1)

    def candidates(self) -> tuple:
        """Counts and IoU of every extension: I, A [n, B, nC, 3] (OR, AND, AND NOT) and score S."""
        prob, n, B, nC = self.prob, self.u1 - self.u0, self.B, self.prob.nC
        cols = self.columns()
        P = prob.formula_label_area(cols.view(n * B, self.Lm), self.bo.view(n * B, -1)).view(n, B, nC)
        Q = prob.formula_label_unit(self.u0, self.u1, cols, self.bo)  # [n, B, nC]
        fI, fA = self.bI.unsqueeze(2), self.bA.unsqueeze(2)
        I = torch.stack([fI + self.I0.unsqueeze(1) - Q, Q, fI - Q], 3)
        A = torch.stack([fA + prob.area_c.view(1, 1, nC) - P, P, fA - P], 3)
        S = _iou(I, A, self.msize.view(n, 1, 1, 1))
        return I, A, torch.where((self.bS >= 0).view(n, B, 1, 1), S, self.neg)

    def extend(self) -> None:
        """One round: the beam's best ``B`` of itself followed by all its extensions."""
        n, B, nC, Lm = self.u1 - self.u0, self.B, self.prob.nC, self.Lm
        I, A, S = self.candidates()
        pool = torch.cat([self.bS, S.view(n, -1)], 1)
        sel = _stable_top(pool, B)  # [n, B]
        carried = sel < B
        c = (sel - B).clamp(min=0)
        cb, cx, cop = c // (nC * 3), (c // 3) % nC, c % 3
        src = torch.where(carried, sel, cb)  # beam slot the new formula starts from
        nl = self.bl.gather(1, src.unsqueeze(2).expand(-1, -1, Lm)).clone()
        no = self.bo.gather(1, src.unsqueeze(2).expand(-1, -1, self.bo.shape[2])).clone()
        rows_n, rows_b = (~carried).nonzero(as_tuple=True)
        pos = (nl >= 0).sum(2)[rows_n, rows_b]  # labels in the source formula
        nl[rows_n, rows_b, pos] = cx[rows_n, rows_b]
        no[rows_n, rows_b, pos - 1] = cop[rows_n, rows_b]
        keep = sel.clamp(max=B - 1)
        self.bI = torch.where(carried, self.bI.gather(1, keep), I.view(n, -1).gather(1, c))
        self.bA = torch.where(carried, self.bA.gather(1, keep), A.view(n, -1).gather(1, c))
        self.bS = pool.gather(1, sel)
        live = (self.bS >= 0).unsqueeze(2)
        self.bl, self.bo = torch.where(live, nl, -1), torch.where(live, no, -1)

    def formulas(self) -> list:
        """Per unit the final beam as [(Formula, iou)], best first (B small Python objects per unit)."""
        lc, bo, bs = self.columns().cpu().tolist(), self.bo.cpu().tolist(), self.bS.cpu().tolist()
        out = []
        for i in range(len(lc)):
            beam = []
            for b in range(self.B):
                if bs[i][b] >= 0:
                    labs = [x for x in lc[i][b] if x >= 0]
                    beam.append((Formula(tuple(labs), tuple(bo[i][b][: max(0, len(labs) - 1)])), bs[i][b]))
            out.append(beam)
        return out


def beam_search(counts: MaskCounts, length: int = 3, beam: int = 5, units: Optional[int] = None) -> SearchResult:
    """The best formula of up to ``length`` labels for every unit of ``counts`` (see module doc).
    ``units``: units searched at once (default: as many as fit a bounded memory).

    Raises ValueError for length < 1 or beam < 1.
    """
    if length < 1 or beam < 1:
        raise ValueError(f"length and beam must be >= 1, got length={length}, beam={beam}")
    prob = _Problem(counts)
    d = counts.w.device
    U, B, Lm = counts.n_units, int(beam), int(length)
    res = SearchResult(
        torch.full((U, Lm), -1, dtype=torch.long, device=d),
        torch.full((U, max(Lm - 1, 0)), -1, dtype=torch.long, device=d),
        torch.zeros(U, dtype=torch.float64, device=d),
        torch.zeros(U, dtype=torch.long, device=d),
        torch.zeros(U, dtype=torch.long, device=d),
        prob.msize,
        torch.full((U,), -1, dtype=torch.long, device=d),
        torch.zeros(U, dtype=torch.float64, device=d),
        [],
    )
    chunk = units or max(1, min(U, _MAX_ELEMS // max(1, B * max(prob.nC, 1) * 3 * 4)))
    for u0 in range(0, U, chunk):
        u1 = min(U, u0 + chunk)
        bm = _Beam(prob, u0, u1, B, Lm)
        for _ in range(Lm - 1):
            bm.extend()
        ok = bm.bS[:, 0] >= 0
        res.labels[u0:u1] = torch.where(ok.unsqueeze(1), bm.columns()[:, 0], -1)
        if Lm > 1:
            res.ops[u0:u1] = torch.where(ok.unsqueeze(1), bm.bo[:, 0, : Lm - 1], -1)
        res.iou[u0:u1] = torch.where(ok, bm.bS[:, 0], torch.zeros((), dtype=torch.float64, device=d))
        res.intersection[u0:u1] = torch.where(ok, bm.bI[:, 0], 0)
        res.area[u0:u1] = torch.where(ok, bm.bA[:, 0], 0)
        res.single_label[u0:u1], res.single_iou[u0:u1] = bm.single_label, bm.single_iou
        res.beams += bm.formulas()
    return res


__all__ = ["beam_search", "SearchResult"]
