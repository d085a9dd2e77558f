"""The protocol every dissection statistic follows, so checkpointing and distributed sync are written once.

A statistic (TopQuantile, TopKImages, Tally) has:

- ``add(...)``: fold in one batch (the arguments differ per statistic);
- ``merge(other)``: fold in another shard's statistic of the same shape;
- ``state_dict()`` / ``load_state_dict(d)``: CPU tensors and plain values (``torch.save``-able with
  ``weights_only=True``); ``load_state_dict`` replaces every mutable field;
- ``to(device)``: move its tensors, returning itself;
- ``reduction``: how ranks combine it. ``"sum"``: the state entries named in ``sum_keys`` add
  (exact int64 all-reduce); ``"gather"``: every rank's state is gathered and merged in rank order
  (exact for order statistics such as top-k lists).

dissect.engine._distributed.sync and dissect.engine._checkpoint use only these members.
:class:`DeclaredState` derives ``state_dict``, ``load_state_dict``, ``to`` and ``sum_keys`` from
the state a statistic declares once (torchmetrics' ``add_state`` pattern).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

REDUCTIONS = ("sum", "gather")


@runtime_checkable
class Statistic(Protocol):
    reduction: str

    def merge(self, other) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, d: dict) -> None: ...

    def to(self, device): ...


class DeclaredState:
    """A statistic's state declared once, its bookkeeping derived (torchmetrics' ``add_state``).

    Class attributes of a subclass:

    - ``identity``: names of plain values that say which statistic it is (units, labels, k, ...):
      saved, and required equal by :meth:`same_as` before a merge or a load (ValueError otherwise);
    - ``scalars``: names of plain values that change as it adds (saved and loaded);
    - ``tensors``: names of its state tensors (None until allocated; saved on the CPU, moved by ``to``);
    - ``summed``: for ``reduction = "sum"``, the scalars that add over shards besides the tensors;
    - ``tables``: derived tensors moved by ``to`` but not saved (lookup tables).

    A subclass may override :meth:`_loaded` to give a loaded tensor its dtype.
    """

    reduction = "gather"
    identity: tuple = ()
    scalars: tuple = ()
    tensors: tuple = ()
    summed: tuple = ()
    tables: tuple = ()
    device: torch.device

    @property
    def sum_keys(self) -> tuple:
        """The state entries ranks add up (``reduction = "sum"``): the tensors and ``summed``."""
        return tuple(self.tensors) + tuple(self.summed)

    def same_as(self, other, action: str = "merge") -> None:
        """Raise ValueError unless ``other`` (a statistic or a state dict) has this one's identity."""
        get = other.get if isinstance(other, dict) else (lambda k: getattr(other, k))
        theirs = tuple(_plain(get(k)) for k in self.identity)
        mine = tuple(_plain(getattr(self, k)) for k in self.identity)
        if theirs != mine:
            raise ValueError(
                f"cannot {action} {type(self).__name__} objects over different "
                f"{', '.join(self.identity)}: {theirs} vs {mine}"
            )

    def state_dict(self) -> dict:
        """Identity and scalars as plain values, tensors on the CPU (``torch.save(weights_only=True)``-able)."""
        d = {k: _plain(getattr(self, k)) for k in tuple(self.identity) + tuple(self.scalars)}
        d.update({k: None if getattr(self, k) is None else getattr(self, k).cpu() for k in self.tensors})
        return d

    def load_state_dict(self, d: dict) -> None:
        """Replace every scalar and tensor by ``d``'s (a :meth:`state_dict` of the same identity)."""
        self.same_as(d, "load a state into")
        for k in self.scalars:
            setattr(self, k, d[k])
        for k in self.tensors:
            setattr(self, k, None if d[k] is None else self._loaded(k, d[k]))

    def _loaded(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device)

    def to(self, device):
        """Move every tensor and table to ``device``; returns self."""
        self.device = torch.device(device)
        for k in tuple(self.tensors) + tuple(self.tables):
            if getattr(self, k) is not None:
                setattr(self, k, getattr(self, k).to(self.device))
        return self


def _plain(v):
    """A value as saved: sequences as lists (a tuple and a list of the same items are the same)."""
    return list(v) if isinstance(v, (tuple, list)) else v
