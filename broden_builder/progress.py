"""Progress for both commands and the Python API: a bar on a terminal, log lines elsewhere.

``progress(iterable, quiet=False, desc=..., total=..., unit=...)`` returns

- on a terminal (stderr is a TTY): a ``tqdm.auto.tqdm`` bar;
- off a terminal (``nohup``, SLURM, CI, ``2> log``): a :class:`LogProgress`, which writes one
  line when the pass starts, then one each time 5% more is done (at most one per
  ``MIN_INTERVAL`` s) or ``EVERY`` s have passed, and one at the end: items done of the total,
  the rate (and images/s where a batch holds several images), the elapsed time and the ETA;
- with a sink installed by :func:`progress_to` (the Python API's ``progress=`` callback or
  logger): a :class:`LogProgress` whose lines go to that sink, and no bar;
- ``quiet=True`` (``-q``) or ``TQDM_DISABLE=1``: nothing.

:func:`note` writes one message (a resume, a checkpoint) the same way: above the bar, to the log,
or to the sink. tqdm reads ``TQDM_DISABLE`` only as a default, which an explicit ``disable``
would override, so it is checked here.

Written here rather than taken from tqdm: tqdm's ``mininterval`` on a file still redraws one
carriage-return line, which a log file shows as one ever-growing line; what a cluster log needs is
whole lines at a slow cadence.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

from .words import plural

#: Off a terminal: a line at least every EVERY seconds (at the next update), and one per FRACTION
#: done, but not more often than once per MIN_INTERVAL seconds (short passes stay short).
EVERY, FRACTION, MIN_INTERVAL = 30.0, 0.05, 5.0


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: ``desc`` made ``n`` of ``total`` (None: unknown) ``unit`` in ``elapsed`` s.

    ``rate``: units per second; ``images_per_s``: images per second where one unit is a batch of
    ``per_unit`` images (else None); ``eta``: seconds left (None: unknown); ``stage``: "start",
    "update" or "end"; ``text``: the line as printed to a log."""

    desc: str
    n: int
    total: Optional[int]
    unit: str
    elapsed: float
    rate: float
    images_per_s: Optional[float]
    eta: Optional[float]
    stage: str
    text: str


Sink = Callable[[Union[ProgressEvent, str]], None]
_SINK: contextvars.ContextVar = contextvars.ContextVar("broden_progress_sink", default=None)


def env_disabled() -> bool:
    """True when the environment asks for no progress bars (``TQDM_DISABLE`` set and not 0/false)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _as_sink(target) -> Optional[Sink]:
    """A callable sink from a callable or a ``logging.Logger`` (each line at INFO)."""
    if target is None:
        return None
    if isinstance(target, logging.Logger):
        return lambda ev: target.info("%s", ev.text if isinstance(ev, ProgressEvent) else ev)
    if callable(target):
        return target
    raise TypeError(f"progress must be a callable or a logging.Logger, got {type(target).__name__}")


@contextlib.contextmanager
def progress_to(target):
    """Send every progress report and note made inside the block to ``target``: a callable, called
    with a :class:`ProgressEvent` (progress) or a ``str`` (a note), or a ``logging.Logger`` (lines at
    INFO). ``None`` leaves the current setting. Raises TypeError for anything else."""
    sink = _as_sink(target)
    if sink is None:
        yield
        return
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class LogProgress:
    """A tqdm look-alike (iteration, ``update``, ``close``, ``set_postfix``, context manager, ``n``)
    that reports in whole lines (module doc) to ``sink`` (default: stderr).

    ``per_unit``: images per unit (a batch size) for the images/s figure; ``clock``: the time
    source (seconds), for tests."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, initial: int = 0,
                 desc: str = "", unit: str = "it", per_unit: Optional[int] = None, sink: Optional[Sink] = None,
                 clock: Callable[[], float] = time.monotonic, **_ignored):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, int(initial), desc, unit
        self.per_unit, self.sink, self.clock = per_unit, sink, clock
        self.start_n, self.t0 = self.n, clock()
        self.last_t, self.last_n, self.closed = self.t0, self.n, False
        self._emit("start")

    def _word(self, n) -> str:
        """The unit, plural unless n is 1 ("img", "B" and "it" stay as they are)."""
        return self.unit if n == 1 or self.unit in ("img", "B", "it", "") else plural(self.unit)

    def _units(self, n) -> str:
        return f"{n if n is not None else '?'} {self._word(n)}"

    def _event(self, stage: str) -> ProgressEvent:
        elapsed = max(0.0, self.clock() - self.t0)
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        ips = rate * self.per_unit if self.per_unit else None
        eta = (self.total - self.n) / rate if self.total is not None and rate > 0 else None
        of = f"/{self.total}" if self.total is not None else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        if stage == "start":
            text = f"{self.desc}: start" + (f", {self._units(self.total)}" if self.total is not None else "") + (
                f", from {self.n}" if self.n else "")  # an unknown total is not printed as "?"
        else:
            text = (f"{self.desc}: {self.n}{of} {self._word(self.total if self.total is not None else self.n)}"
                    f"{pct}, {rate:.3g} {self.unit}/s"
                    + (f", {ips:.3g} images/s" if ips is not None else "") + f", elapsed {_duration(elapsed)}"
                    + (f", ETA {_duration(eta)}" if stage == "update" and self.total is not None else "")
                    + (", done" if stage == "end" else ""))
        return ProgressEvent(self.desc, self.n, self.total, self.unit, elapsed, rate, ips, eta, stage, text)

    def _emit(self, stage: str) -> None:
        ev = self._event(stage)
        if self.sink is not None:
            self.sink(ev)
        else:
            print(ev.text, file=sys.stderr, flush=True)
        self.last_t, self.last_n = self.clock(), self.n

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; writes a line when one is due (module doc)."""
        self.n += int(n)
        now = self.clock()
        since = now - self.last_t
        step = self.total * FRACTION if self.total else None
        if self.total is not None and self.n >= self.total:
            return  # the end line (close) says it
        if since >= EVERY or (step is not None and self.n - self.last_n >= step and since >= MIN_INTERVAL):
            self._emit("update")

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def close(self) -> None:
        """Write the end line (once)."""
        if not self.closed:
            self.closed = True
            self._emit("end")

    def set_postfix(self, *args, **kw) -> None:
        """Accepted for tqdm compatibility; the lines carry no postfix."""

    set_postfix_str = set_description = refresh = set_postfix

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(iterable=None, quiet: bool = False, per_unit: Optional[int] = None, **kw):
    """A progress reporter over ``iterable`` (or a manual one with ``total=``); see the module doc.
    ``per_unit``: images per unit (the batch size) for an images/s figure off a terminal."""
    if quiet or env_disabled():
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=True, **kw)
    sink = _SINK.get()
    if sink is None and _stderr_is_tty():
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=None, **kw)
    kw.pop("leave", None)
    return LogProgress(iterable, per_unit=per_unit, sink=sink, **kw)


def note(message: str, quiet: bool = False) -> None:
    """One line (a resume, a checkpoint) at the default level: to the :func:`progress_to` sink, above
    a terminal's bar (tqdm.write) or to stderr. ``quiet`` or ``TQDM_DISABLE``: nothing."""
    if quiet or env_disabled():
        return
    sink = _SINK.get()
    if sink is not None:
        sink(message)
    elif _stderr_is_tty():
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def add_verbosity_flags(parser, top: bool = False) -> None:
    """``-q/--quiet`` (no progress) and ``-v/--verbose`` (INFO logging) on a CLI parser.

    Both commands put them on the top parser (``dissect -q run ...``) and on every subcommand
    (``dissect run ... -q``); the subcommands' copies default to "not given" (argparse.SUPPRESS)
    so they never undo a flag given before the subcommand.
    """
    import argparse

    default = False if top else argparse.SUPPRESS
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress (no bars on a terminal, no progress lines in a log)")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log more (INFO messages)")


def add_verbosity_to_subcommands(subparsers) -> None:
    """:func:`add_verbosity_flags` on every subcommand parser of an ``add_subparsers()`` object."""
    for sub in set(subparsers.choices.values()):
        add_verbosity_flags(sub)
