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


def label_index(store, progress: bool = False) -> dict:
    """The cached index of ``store`` (a BrodenStore), built on first use."""
    cache = Path(store.root) / ".cache" / f"label_index-{store.fingerprint()[:16]}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                numbers, offsets, rows = z["numbers"], z["offsets"], z["rows"]
            return {int(n): rows[offsets[i]:offsets[i + 1]] for i, n in enumerate(numbers)}
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable label index %s (%s); rebuilding it", cache, e)
    index = scan_label_index(store, progress)
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
