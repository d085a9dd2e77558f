"""Checkpoints of a dissection: ``out/.dissect_state/rank<r>of<w>.pt``, one file per rank.

A checkpoint holds the statistics of every layer (their ``state_dict``, see dissect.stats.protocol)
at a batch boundary, the pass and batch to continue from, and the run's key (model, data, store,
settings, shard). It is resumed only when the key matches text for text, and, under torchrun, only
when every rank holds one of the same pass. Files are read with ``torch.load(weights_only=True)``:
nothing is unpickled. Set ``DISSECT_FAULT_AFTER=<pass>:<batch>`` to kill the process after that
batch (tests of resume).
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Optional

import torch

from broden_builder.shared import atomic_write_bytes, count, note

from ._distributed import DistInfo, gather_states

log = logging.getLogger(__name__)

STATE_DIR = ".dissect_state"
FAULT_ENV = "DISSECT_FAULT_AFTER"  # tests: "<pass>:<batch>" -> hard exit after that batch


class Checkpoint:
    """Save, load and remove one rank's checkpoint under ``work`` (None = never checkpoint).

    ``key`` is the run's identity (JSON-able); ``every``: save after every that many batches (0 = never).
    """

    def __init__(self, work: Optional[Path], key: dict, info: DistInfo, every: int, quiet: bool = False):
        self.work, self.info, self.every, self.quiet = work, info, every, quiet
        self.key_text = json.dumps(key, sort_keys=True, default=str)
        self.path = (work / STATE_DIR / f"rank{info.rank}of{info.world}.pt") if work is not None else None
        fault = os.environ.get(FAULT_ENV, "")
        self.fault = tuple(int(x) for x in fault.split(":")) if fault else None

    def save(self, pass_no: int, next_batch: int, stats) -> None:
        """Write ``stats.state_dict()`` (atomically) with where to continue."""
        if self.path is None or self.every == 0:
            return
        state = {"key": self.key_text, "pass": pass_no, "next_batch": next_batch, **stats.state_dict()}
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        note(f"checkpoint: pass {pass_no}, {count(next_batch, 'batch')} done, saved in {self.path}", self.quiet)

    def step(self, pass_no: int, done: int, stats) -> None:
        """After ``done`` batches of pass ``pass_no``: save every ``every`` batches (and the test kill hook)."""
        if self.every and done % self.every == 0:
            self.save(pass_no, done, stats)
        if self.fault and self.fault == (pass_no, done):
            os._exit(75)  # simulated kill (tests)

    def load(self, layers) -> Optional[dict]:
        """The saved state when it was made by this very run for these ``layers``; else None (logged)."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: start over
            log.warning("cannot read checkpoint %s (%s); starting over", self.path, e)
            return None
        if state.get("key") != self.key_text or set(state.get("layers", {})) != set(layers):
            log.warning(
                "checkpoint %s was made with different settings, model, data or store; starting over", self.path
            )
            return None
        return state

    def agree(self, state: Optional[dict]) -> Optional[dict]:
        """All ranks resume only if all hold a checkpoint of the same pass (else all start over)."""
        if not self.info.active:
            return state
        phases = gather_states({"pass": state["pass"] if state else 0}, self.info)
        if len({p["pass"] for p in phases}) != 1:
            log.warning("ranks hold checkpoints of different passes; starting over")
            return None
        return state

    def remove(self) -> None:
        """Drop this rank's file (and the folder once empty)."""
        if self.path is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        try:
            self.path.parent.rmdir()
        except OSError:
            pass
