"""Whole-store commits: a change made of many files appears all at once, or not at all.

A writer (``broden build``, ``broden add``) prepares every new file in a work folder
inside the store (``.build/`` or ``.broden-add/``), then calls :func:`commit`:

1. ``os.sync()`` flushes every prepared file and folder to disk;
2. the plan (which work file goes to which store path, which old store files retire) is
   written durably as ``WORK/COMMIT``: from this instant the change is decided;
3. the moves are applied in order, ``index.csv`` last; an existing target is first moved
   aside into ``WORK/.old``; the store's folders are fsynced;
4. the work folder is renamed to ``.trash-*`` and deleted.

A process killed anywhere in 3-4 leaves ``WORK/COMMIT``: the store is then between two
versions, so every reader refuses it (:func:`pending_commit`, checked by
``BrodenStore`` and ``validate``) until :func:`complete` finishes the moves (``broden
recover STORE``, or the next ``build``/``add``, under the store's lock). Moves already done
are skipped, so completing is idempotent. Killed before 2, the store is unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional, Sequence, Union

from .atomic import atomic_write_text, fsync_dir

MARKER = "COMMIT"
#: Work folders whose COMMIT marker means a pending commit.
WORK_DIRS = (".build", ".broden-add")
TRASH_PREFIX = ".trash-"


def pending_commit(root: Union[str, Path]) -> Optional[Path]:
    """The COMMIT marker of an interrupted commit in the store at ``root``, else None."""
    root = Path(root)
    for name in WORK_DIRS:
        m = root / name / MARKER
        if m.is_file():
            return m
    return None


def pending_message(root: Union[str, Path]) -> str:
    return (f"an interrupted commit is pending (the store is between two versions); "
            f"run `broden recover {root}` to complete it")


def commit(root: Union[str, Path], work: Union[str, Path], moves: Sequence[tuple], retire: Sequence[str] = (),
           meta: Optional[dict] = None) -> None:
    """Commit the prepared files: ``moves`` are (path in ``work``, path in ``root``) pairs, in order
    (put index.csv last); ``retire`` lists store paths of the old version to remove. See the module docstring."""
    decide(root, work, moves, retire, meta)
    complete(root)


def decide(root: Union[str, Path], work: Union[str, Path], moves: Sequence[tuple], retire: Sequence[str] = (),
           meta: Optional[dict] = None) -> None:
    """Steps 1-2 of a commit: flush everything, then write the plan durably (the change is decided)."""
    work = Path(work)
    plan = {"moves": [[str(a), str(b)] for a, b in moves], "retire": [str(r) for r in retire], "meta": meta or {}}
    if hasattr(os, "sync"):
        os.sync()  # every prepared file and folder is on disk before the decision is
    atomic_write_text(work / MARKER, json.dumps(plan, indent=1) + "\n", durable=True)


def read_plan(root: Union[str, Path]) -> Optional[dict]:
    """The plan of the pending commit (None when there is none)."""
    m = pending_commit(root)
    return None if m is None else json.loads(m.read_text("utf-8"))


def _aside(work: Path, root: Path, rel: str) -> None:
    dst = root / rel
    if not (dst.exists() or dst.is_symlink()):
        return
    old = work / ".old" / rel
    if old.exists() or old.is_symlink():  # a previous attempt moved an older copy aside: drop it
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    old.parent.mkdir(parents=True, exist_ok=True)
    os.replace(dst, old)


def complete(root: Union[str, Path]) -> Optional[dict]:
    """Finish the pending commit of ``root`` (idempotent); returns its plan, or None when none was pending.

    Hold the store's lock while calling it.
    """
    root = Path(root)
    marker = pending_commit(root)
    if marker is None:
        return None
    work = marker.parent
    plan = json.loads(marker.read_text("utf-8"))
    touched = {root}
    for rel in plan.get("retire", []):
        _aside(work, root, rel)
    for src_rel, dst_rel in plan["moves"]:
        src, dst = work / src_rel, root / dst_rel
        if not (src.exists() or src.is_symlink()):
            continue  # moved before the interruption
        _aside(work, root, dst_rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        touched.add(dst.parent)
    for d in sorted(touched):
        fsync_dir(d)
    drop_work(root, work)
    return plan


def drop_work(root: Path, work: Path) -> None:
    """Remove a work folder: renamed first (one atomic step, so no half-deleted marker survives), then deleted."""
    if not work.exists():
        return
    trash = root / f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}"
    os.replace(work, trash)
    fsync_dir(root)
    shutil.rmtree(trash, ignore_errors=True)


def sweep_trash(root: Union[str, Path]) -> None:
    """Delete the ``.trash-*`` folders a killed :func:`drop_work` left (call under the lock)."""
    root = Path(root)
    if root.is_dir():
        for p in root.glob(TRASH_PREFIX + "*"):
            shutil.rmtree(p, ignore_errors=True)
