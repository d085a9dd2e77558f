"""One writer at a time: an exclusive lock on a store (or a dissect --out folder).

Every command that writes a store (``broden build``, ``broden add``, ``broden recover``)
or a results folder (``dissect run``, ``dissect score``) holds :func:`exclusive` on it for
its whole run. A second writer is refused at once (never queued) with the holder's PID,
host and start time, so two builds into one ``--out`` can no longer interleave their rows.

The lock is an OS advisory lock (``flock`` on POSIX, via the ``filelock`` library) on
``FOLDER/.lock``; the OS drops it when the holder dies, even by ``kill -9``, so a stale
lock never blocks a resume. The (empty) lock file itself stays (deleting it on release
would let two processes lock two different inodes); ``FOLDER/.lock.holder`` records who
holds it, for the refusal message only, and is removed on release.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

from filelock import FileLock, Timeout

from ..errors import BrodenError

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.holder"


class LockedError(BrodenError, RuntimeError):
    """Another process holds the folder's lock; the message names the folder and the holder."""

    def __init__(self, folder: Union[str, Path], holder: dict):
        self.path = str(folder)
        self.holder = holder
        who = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}" + (
            f" ({holder['command']}, since {holder['since']})" if holder.get("since") else ""
        )
        super().__init__(
            f"{folder}: in use by {who}; wait for it to finish (a killed holder releases the lock by itself)"
        )

    def __reduce__(self):  # rebuilt from its own arguments, so it crosses processes unchanged
        return type(self), (self.path, self.holder)


def read_holder(folder: Union[str, Path]) -> dict:
    """Who holds (or last held) the lock of ``folder``: {pid, host, since, command}; {} when unknown."""
    try:
        return json.loads((Path(folder) / HOLDER_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _sweep_holder_debris(folder: Path) -> None:
    """Remove temporary holder files (``..lock.holder.XXXX.tmp``) left by a holder killed while
    writing it (call with the lock held: no live writer owns them), so a resumed tree has no debris."""
    from .atomic import TEMP_FILE

    for p in folder.glob(f".{HOLDER_NAME}.*.tmp"):
        if TEMP_FILE.match(p.name):
            try:
                p.unlink()
            except OSError:
                pass


@contextmanager
def exclusive(folder: Union[str, Path], command: str = "") -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created when missing) for the ``with`` block.

    Raises LockedError at once when another process holds it; OSError when the folder
    cannot be created (e.g. a path below a file, or a read-only parent).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockedError(folder, read_holder(folder)) from None
    try:
        _sweep_holder_debris(folder)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command,
        }
        try:
            from .atomic import atomic_write_text

            atomic_write_text(folder / HOLDER_NAME, json.dumps(holder) + "\n")
        except OSError:
            pass  # informative only
        yield folder
    finally:
        try:
            (folder / HOLDER_NAME).unlink()  # safe: the OS lock is on .lock; this file only informs
        except OSError:
            pass
        lock.release()
