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
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

REDUCTIONS = ("sum", "gather")


@runtime_checkable
class Statistic(Protocol):
    reduction: str

    def merge(self, other) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, d: dict) -> None: ...

    def to(self, device): ...
