"""Which images carry each label: an index built by one scan of the store, cached beside it.

The cache lives in ``<store>/.cache/label_index-<fingerprint>.npz`` (the fingerprint of
index.csv, label.csv and category.csv), so a changed store never reuses a stale index;
the original tools ignore the folder. A read-only store is scanned without caching.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes

log = logging.getLogger(__name__)


def scan_label_index(store, progress: bool = False) -> dict:
    """label number -> sorted int64 array of the rows (0-based) carrying it, in any category or layer."""
    from ..progress import progress as _progress

    pairs_rows, pairs_labels = [], []
    for row in _progress(store.rows, not progress, desc="label index", unit="img"):
        found: set = set()
        for cat in store.categories:
            if cat in store.image_level_categories:
                found.update(store.image_labels(row.index, cat))
            else:
                for layer in store.pixel_layers(row.index, cat):
                    found.update(int(x) for x in np.unique(layer))
        found.discard(0)
        pairs_rows.extend([row.index] * len(found))
        pairs_labels.extend(sorted(found))
    rows = np.asarray(pairs_rows, dtype=np.int64)
    labels = np.asarray(pairs_labels, dtype=np.int64)
    order = np.lexsort((rows, labels))
    rows, labels = rows[order], labels[order]
    numbers, starts = np.unique(labels, return_index=True)
    return {int(n): rows[s:e] for n, s, e in zip(numbers, starts, list(starts[1:]) + [len(rows)])}


def _cache_folder(store) -> "Path | None":
    """``STORE/.cache`` when it is (or may become) a real folder of the store; None otherwise.

    A store made elsewhere may ship ``.cache`` as a symbolic link: writing the index through
    it would write outside the store, and reading from it would trust a file from anywhere.
    """
    folder = Path(store.root) / ".cache"
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        log.warning("%s is a symbolic link or not a folder: the label index is not cached", folder)
        return None
    return folder


def _consistent(numbers: np.ndarray, offsets: np.ndarray, rows: np.ndarray, n_rows: int) -> bool:
    """A cached index is used only when its arrays fit together and name existing rows (the file
    comes from the store folder, which may have been copied or shipped with a stale or made-up one)."""
    return (numbers.ndim == offsets.ndim == rows.ndim == 1 and len(offsets) == len(numbers) + 1
            and (len(offsets) == 0 or (offsets[0] == 0 and offsets[-1] == len(rows)))
            and bool(np.all(np.diff(offsets) >= 0)) and bool(np.all(np.diff(numbers) > 0))
            and (len(rows) == 0 or (int(rows.min()) >= 0 and int(rows.max()) < n_rows)))


def label_index(store, progress: bool = False) -> dict:
    """The cached index of ``store`` (a BrodenStore), built on first use."""
    folder = _cache_folder(store)
    cache = None if folder is None else folder / f"label_index-{store.fingerprint()[:16]}.npz"
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                numbers, offsets, rows = z["numbers"], z["offsets"], z["rows"]
            if _consistent(numbers, offsets, rows, len(store.rows)):
                return {int(n): rows[offsets[i]:offsets[i + 1]] for i, n in enumerate(numbers)}
            log.warning("ignoring inconsistent label index %s; rebuilding it", cache)
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable label index %s (%s); rebuilding it", cache, e)
    index = scan_label_index(store, progress)
    if cache is None:
        return index
    numbers = np.array(sorted(index), dtype=np.int64)
    offsets = np.cumsum([0] + [len(index[n]) for n in numbers]).astype(np.int64)
    rows = np.concatenate([index[n] for n in numbers]) if len(numbers) else np.zeros(0, np.int64)
    buf = io.BytesIO()
    np.savez(buf, numbers=numbers, offsets=offsets, rows=rows)
    try:
        atomic_write_bytes(cache, buf.getvalue())
    except OSError as e:  # a read-only store: answer without caching
        log.info("cannot cache the label index in %s (%s)", cache.parent, e)
    return index
