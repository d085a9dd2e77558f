"""The labels of every image of a run as per-pixel label combinations, for the permutation null.

The null (dissect.stats.null) pairs the masks of image i with the labels of image pi(i) for many
permutations pi, so each image's labels are decoded once (Tally.batch_labels: one label
combination id per pixel) and kept in a compact form that any permutation can read:

- per pixel, its label combination numbered within its image (int16 when every image has fewer
  than 32,768 combinations, else int32);
- per combination, its label columns (as Tally counts them: each label once per pixel, none that
  the image carries image-wide) and their primary categories;
- per image, its image-level labels Z [L] and the categories it carries (for the union rules).

Memory: positions x S x 2 bytes (int16 combination ids) plus 16 x K bytes per combination, S =
sh x sw the segmentation size; a 1,000-image store at 112 x 112 takes about 25 MB.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LabelRuns(NamedTuple):
    """The table (see the module docstring); n images of S = sh * sw pixels, G combinations.

    combo_id [n * S] int16/int32 (combination of each pixel, numbered within its image: image i's
    combination c is the table's combo_offset[i] + c), combo_offset [n + 1] int64, cols [G, K]
    int64 (label columns,
    L = none), cats [G, K] int64 (primary category of each column, C = none), Z [n, L] bool,
    has_img [n, C] bool (categories carried image-wide), has [n, C] bool (categories carried at
    all: the 'original' union rule), size (sh, sw)."""

    combo_id: torch.Tensor
    combo_offset: torch.Tensor
    cols: torch.Tensor
    cats: torch.Tensor
    Z: torch.Tensor
    has_img: torch.Tensor
    has: torch.Tensor
    size: tuple

    @property
    def images(self) -> int:
        return self.Z.shape[0]


class LabelRunsBuilder:
    """Collects batches of labels, in position order, into a :class:`LabelRuns`.

    ``n_labels`` L and ``primary`` (long [L], the category index of each column) are the Tally's;
    ``categories`` C its number of categories. Feed :meth:`add` with Tally.batch_labels tuples or
    their :meth:`part`, in order.
    """

    def __init__(self, n_labels: int, primary: torch.Tensor, categories: int, size: tuple):
        self.L, self.C, self.size = int(n_labels), int(categories), (int(size[0]), int(size[1]))
        self.prim = torch.cat([primary.cpu().long(), torch.tensor([self.C])])  # column L -> slot C
        self.parts: list = []
        self.images = 0

    def part(self, labels) -> dict:
        """One batch's share of the table, independent of the others (so DataLoader workers can make
        it): ``labels`` = (Z [B, L + 1], cid [B * S], img [nc], cols [nc, K], npix) of
        Tally.batch_labels (combination ids grouped by image, as it makes them)."""
        Z, cid, img, cols, _ = (t.cpu() for t in tuple(labels)[-5:])
        B, (SH, SW) = Z.shape[0], self.size
        S = SH * SW
        ncomb = torch.bincount(img, minlength=B)
        local = cid.view(B, S).long() - (torch.cumsum(ncomb, 0) - ncomb).view(B, 1)  # within each image
        small = int(ncomb.max()) <= 32767 if B else True
        has_img = torch.zeros(B, self.C + 1, dtype=torch.bool)
        zb, zl = Z[:, : self.L].nonzero(as_tuple=True)
        has_img[zb, self.prim[zl]] = True
        cats = self.prim[cols]
        has = has_img.clone()
        has[img.unsqueeze(1).expand_as(cats).reshape(-1), cats.reshape(-1)] = True
        return {
            "combo_id": local.to(torch.int16 if small else torch.int32).reshape(-1),
            "ncomb": ncomb,
            "cols": cols.long(),
            "Z": Z[:, : self.L].clone(),
            "has_img": has_img[:, : self.C],
            "has": has[:, : self.C],
        }

    def add(self, part) -> None:
        """Append a batch: a :meth:`part`, or the Tally.batch_labels tuple it is made from."""
        self.parts.append(part if isinstance(part, dict) else self.part(part))

    def finish(self) -> LabelRuns:
        """The table of every image added (a LabelRuns; the builder's parts are released)."""
        parts, self.parts = self.parts, []
        self.images = sum(int(p["Z"].shape[0]) for p in parts)
        dt = torch.int16 if all(p["combo_id"].dtype == torch.int16 for p in parts) else torch.int32
        K = max([p["cols"].shape[1] for p in parts] + [1])
        pad = lambda c: torch.cat([c, c.new_full((c.shape[0], K - c.shape[1]), self.L)], 1)
        cols = torch.cat([pad(p["cols"]) for p in parts]) if parts else torch.empty(0, K, dtype=torch.long)
        offsets = lambda key: torch.cat(
            [torch.zeros(1, dtype=torch.long), torch.cumsum(torch.cat([p[key] for p in parts]), 0)]
        )
        cat = lambda key: torch.cat([p[key] for p in parts])
        return LabelRuns(
            combo_id=torch.cat([p["combo_id"].to(dt) for p in parts]) if parts else torch.empty(0, dtype=dt),
            combo_offset=offsets("ncomb"),
            cols=cols,
            cats=self.prim[cols],
            Z=cat("Z"),
            has_img=cat("has_img"),
            has=cat("has"),
            size=self.size,
        )


__all__ = ["LabelRuns", "LabelRunsBuilder"]
