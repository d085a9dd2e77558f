"""Which images carry each label: an index built by one scan of the store, cached outside it.

A reader never writes into the store (a store may be read-only or shared): the cache lives in the user's cache folder,
``$BRODEN_CACHE_DIR`` or ``$XDG_CACHE_HOME/broden`` or ``~/.cache/broden``, as
``label_index-<store path hash>-<key>.npz``. The key covers index.csv, label.csv and
category.csv (the store fingerprint) and every label PNG's path, size and modification time,
so an edited plane or table is never answered from a stale index. A cache folder that cannot
be written only means no cache.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
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


def cache_folder() -> Path:
    """The user's cache folder for label indexes (module docstring); not created here."""
    explicit = os.environ.get("BRODEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "broden"


def index_key(store) -> str:
    """sha256 over the store fingerprint (its tables) and each label PNG's path, size and mtime (ns)."""
    h = hashlib.sha256(store.fingerprint().encode())
    images = Path(store.root) / "images"
    for row in store.rows:
        for cat in store.categories:
            if cat in store.image_level_categories:
                continue
            for rel in row.cells[cat]:
                try:
                    st = os.stat(images / rel)
                    h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{rel}|missing\n".encode())
    return h.hexdigest()


def _cache_file(store) -> Path:
    where = hashlib.sha256(os.path.realpath(store.root).encode()).hexdigest()[:16]
    return cache_folder() / f"label_index-{where}-{index_key(store)[:32]}.npz"


def _consistent(numbers: np.ndarray, offsets: np.ndarray, rows: np.ndarray, n_rows: int) -> bool:
    """A cached index is used only when its arrays fit together and name existing rows (the file
    comes from the store folder, which may have been copied or shipped with a stale or made-up one)."""
    return (
        numbers.ndim == offsets.ndim == rows.ndim == 1
        and len(offsets) == len(numbers) + 1
        and (len(offsets) == 0 or (offsets[0] == 0 and offsets[-1] == len(rows)))
        and bool(np.all(np.diff(offsets) >= 0))
        and bool(np.all(np.diff(numbers) > 0))
        and (len(rows) == 0 or (int(rows.min()) >= 0 and int(rows.max()) < n_rows))
    )


def label_index(store, progress: bool = False) -> dict:
    """The cached index of ``store`` (a BrodenStore), built on first use (cached outside the store)."""
    cache = _cache_file(store)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                numbers, offsets, rows = z["numbers"], z["offsets"], z["rows"]
            if _consistent(numbers, offsets, rows, len(store.rows)):
                return {int(n): rows[offsets[i] : offsets[i + 1]] for i, n in enumerate(numbers)}
            log.warning("ignoring inconsistent label index %s; rebuilding it", cache)
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable label index %s (%s); rebuilding it", cache, e)
    index = scan_label_index(store, progress)
    numbers = np.array(sorted(index), dtype=np.int64)
    offsets = np.cumsum([0] + [len(index[n]) for n in numbers]).astype(np.int64)
    rows = np.concatenate([index[n] for n in numbers]) if len(numbers) else np.zeros(0, np.int64)
    buf = io.BytesIO()
    np.savez(buf, numbers=numbers, offsets=offsets, rows=rows)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, buf.getvalue())
    except OSError as e:  # no writable cache folder: answer without caching
        log.info("cannot cache the label index in %s (%s)", cache.parent, e)
    return index
