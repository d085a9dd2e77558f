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
from .paths import UnsafePathError, check_relpath

MARKER = "COMMIT"
#: Work folders whose COMMIT marker means a pending commit.
WORK_DIRS = (".build", ".broden-add")
TRASH_PREFIX = ".trash-"


def is_store_folder(root: Union[str, Path]) -> bool:
    """True when ``root`` holds a store's tables or a work folder (a store being built or changed).
    Commands that change an existing store check it before taking the store's lock, so that
    pointing them at any other folder writes nothing there (not even ``.lock``)."""
    root = Path(root)
    return any((root / n).exists() or (root / n).is_symlink() for n in ("index.csv", "label.csv") + WORK_DIRS)


def check_work_folder(root: Union[str, Path], work: Union[str, Path]) -> Path:
    """``work`` (a work or trash folder of the store at ``root``) when it may be written and deleted:
    absent, or a real folder directly inside ``root``, never a symbolic link (a store from elsewhere
    could plant ``.build -> ~/thesis``: writing or deleting through it would act outside the store).

    Raises UnsafePathError naming the folder.
    """
    work = Path(work)
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise UnsafePathError(
            f"{work}: the store's work folder is a symbolic link or not a folder; "
            f"refusing to write or delete through it (remove it by hand)"
        )
    return work


def pending_commit(root: Union[str, Path]) -> Optional[Path]:
    """The COMMIT marker of an interrupted commit in the store at ``root``, else None.

    Raises UnsafePathError when a work folder is a symbolic link (see :func:`check_work_folder`).
    """
    root = Path(root)
    for name in WORK_DIRS:
        check_work_folder(root, root / name)
        m = root / name / MARKER
        if m.is_file():
            return m
    return None


def _inside(base: Path, rel: str, what: str) -> None:
    """Raise UnsafePathError unless ``base / rel`` stays in ``base``: lexically (no '..', not absolute)
    and through symbolic links in its folders. The last component itself may be a link: a commit
    renames links, never writes through them. Under ``images/`` the base is the store's real
    ``images`` folder (which may live elsewhere, as the reader allows: store/paths.py)."""
    why = check_relpath(rel)
    if why is not None:
        raise UnsafePathError(f"{what} {rel!r} leaves {base}: {why}")
    if rel.startswith("images/"):
        base, rel = base / "images", rel[len("images/") :]
    real_base = os.path.realpath(base)
    parent = os.path.realpath((base / rel).parent)
    if os.path.commonpath([real_base, parent]) != real_base:
        raise UnsafePathError(f"{what} {rel!r} leaves {base}: through a symbolic link its folder is {parent}")


def _checked_plan(root: Path, work: Path, plan) -> dict:
    """``plan`` when every path it names stays inside its folder (sources in ``work``, targets and
    retired paths in ``root``); a plan comes from a file in the store, which a store made elsewhere
    could have planted to move or delete files outside it (paths stay inside the store). Raises UnsafePathError
    (a path leaves its folder) or ValueError (malformed plan), naming the marker."""
    where = work / MARKER
    ok = (
        isinstance(plan, dict)
        and isinstance(plan.get("moves"), list)
        and isinstance(plan.get("retire", []), list)
        and all(isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m) for m in plan["moves"])
        and all(isinstance(r, str) for r in plan.get("retire", []))
    )
    if not ok:
        raise ValueError(f"{where}: malformed commit plan (expected {{'moves': [[src, dst], ...], 'retire': [...]}})")
    try:
        for src, dst in plan["moves"]:
            _inside(work, src, "commit source")
            _inside(root, dst, "commit target")
        for rel in plan.get("retire", []):
            _inside(root, rel, "retired path")
    except UnsafePathError as e:
        raise UnsafePathError(f"{where}: {e}; refusing the commit (remove the work folder by hand)") from None
    return plan


def pending_message(root: Union[str, Path]) -> str:
    return (
        f"an interrupted commit is pending (the store is between two versions); "
        f"run `broden recover {root}` to complete it"
    )


def commit(
    root: Union[str, Path],
    work: Union[str, Path],
    moves: Sequence[tuple],
    retire: Sequence[str] = (),
    meta: Optional[dict] = None,
) -> None:
    """Commit the prepared files: ``moves`` are (path in ``work``, path in ``root``) pairs, in order
    (put index.csv last); ``retire`` lists store paths of the old version to remove. See the module docstring."""
    decide(root, work, moves, retire, meta)
    complete(root)


def decide(
    root: Union[str, Path],
    work: Union[str, Path],
    moves: Sequence[tuple],
    retire: Sequence[str] = (),
    meta: Optional[dict] = None,
) -> None:
    """Steps 1-2 of a commit: flush everything, then write the plan durably (the change is decided)."""
    work = check_work_folder(root, work)
    plan = {"moves": [[str(a), str(b)] for a, b in moves], "retire": [str(r) for r in retire], "meta": meta or {}}
    _checked_plan(Path(root), work, plan)  # before the decision: a refused plan leaves the store as it was
    if hasattr(os, "sync"):
        os.sync()  # every prepared file and folder is on disk before the decision is
    atomic_write_text(work / MARKER, json.dumps(plan, indent=1) + "\n", durable=True)


def read_plan(root: Union[str, Path]) -> Optional[dict]:
    """The plan of the pending commit (None when there is none)."""
    m = pending_commit(root)
    return None if m is None else _read_plan_file(Path(root), m)


def _read_plan_file(root: Path, marker: Path) -> dict:
    try:
        plan = json.loads(marker.read_text("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{marker}: unreadable commit plan ({e}); remove the work folder by hand") from None
    return _checked_plan(root, marker.parent, plan)


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
    plan = _read_plan_file(root, marker)
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
    check_work_folder(root, work)
    trash = root / f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}"
    os.replace(work, trash)
    fsync_dir(root)
    shutil.rmtree(trash, ignore_errors=True)


def sweep_trash(root: Union[str, Path]) -> None:
    """Delete the ``.trash-*`` folders a killed :func:`drop_work` left (call under the lock)."""
    root = Path(root)
    if root.is_dir():
        for p in root.glob(TRASH_PREFIX + "*"):
            if p.is_symlink() or not p.is_dir():
                p.unlink()  # the link itself, never what it points to
            else:
                shutil.rmtree(p, ignore_errors=True)
