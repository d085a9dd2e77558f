"""A cache of decoded label planes, so that a second dissection on one store skips PNG decoding.

Pass 2 of every dissection decodes every label PNG of the probe set (about 0.6 ms of CPU per
Broden image, the largest fixed cost after imports). Users dissect many layers and models against
one store, so the decoded planes are kept, run-length encoded, under
``STORE/.cache/labels/<fingerprint>/``: one ``.npz`` *segment* per batch of rows, named by a hash
of the rows and categories it holds.

Never stale: the folder is keyed by the store's fingerprint (index.csv, label.csv, category.csv),
and each segment records, per row, the size and modification time (ns) of every label PNG it was
decoded from; a segment is used only when every file still has them (one ``stat`` per file, ~1%
of a decode), else it is decoded afresh and rewritten. Segments are written atomically
(store.atomic), so a killed writer leaves no half segment, and two processes writing the same
segment write the same bytes. The cache is bounded (``limit_bytes``; oldest segments removed
first) and is skipped with a log line when the store is read-only.

Why our own codec: label planes are piecewise constant, and a run-length code decodes with one
``np.repeat`` (microseconds) where zlib-based formats (PNG itself, ``savez_compressed``) inflate
every byte again; this is the one place where the format's semantics (a plane of label numbers)
decide the encoding.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .atomic import atomic_write_bytes

log = logging.getLogger(__name__)

#: default bound on the cache's size on disk (bytes); Broden at 112 x 112 needs about 1.5 GiB
DEFAULT_LIMIT = 8 << 30
CACHE_DIR = Path(".cache") / "labels"


def rle_encode(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of the runs of ``plane`` read in C order; ``np.repeat(values, lengths)``
    gives it back. values int64 [R], lengths int64 [R]."""
    flat = np.ascontiguousarray(plane).reshape(-1)
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    lengths = np.diff(np.append(starts, flat.size))
    return flat[starts].astype(np.int64), lengths.astype(np.int64)


class LabelCache:
    """Decoded label planes of ``store`` (a BrodenStore) for ``categories``, kept on disk.

    :meth:`get` returns the items of a batch of rows (as ``BrodenDataset.load_labels`` gives them:
    ``pixel`` {cat: LongTensor[L, sh, sw]}, ``image_level`` {cat: LongTensor[K]}) or None on a miss;
    :meth:`put` stores them. Both never raise for cache trouble (a broken or unwritable segment is
    a miss, logged at debug level): the labels are always read right, the cache only saves time.
    """

    def __init__(
        self, store, categories: Sequence[str], limit_bytes: int = DEFAULT_LIMIT, folder: Optional[Path] = None
    ):
        self.store = store
        self.categories = list(categories)
        self.pixel = [c for c in self.categories if c not in store.image_level_categories]
        self.limit = int(limit_bytes)
        self.folder = Path(folder) if folder else store.root / CACHE_DIR / store.fingerprint()[:32]
        self.writable = True
        self._total: Optional[int] = None  # bytes on disk, counted once per process, then kept up to date

    # ----------------------------------------------------------------- keys
    def _segment(self, rows: Sequence[int]) -> Path:
        h = hashlib.sha1(repr((list(map(int, rows)), self.categories)).encode()).hexdigest()
        return self.folder / f"{h}.npz"

    def _signature(self, row: int) -> list:
        cells = self.store.rows[row].cells
        return [self.store.member_stat(p, row) for c in self.pixel for p in cells[c]]

    # ----------------------------------------------------------------- read
    def get(self, rows: Sequence[int]) -> Optional[list]:
        """The label items of ``rows`` from the cache, or None when any is missing or stale."""
        path = self._segment(rows)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError):
            return None
        try:
            if not np.array_equal(data["rows"], np.asarray(rows, np.int64)):
                return None
            sig = data["sig"].reshape(-1, 2).tolist()
            want = [s for r in rows for s in self._signature(r)]
            if [tuple(s) for s in sig] != [tuple(s) for s in want]:
                return None
            return self._decode(data, rows)
        except (OSError, ValueError, KeyError, IndexError):
            return None

    def _decode(self, data: dict, rows: Sequence[int]) -> list:
        import torch

        items: list = [{"index": int(r), "pixel": {}, "image_level": {}} for r in rows]
        for cat in self.pixel:
            layers, runs = data[f"p_{cat}_layers"], data[f"p_{cat}_runs"]
            vals, lens = data[f"p_{cat}_vals"], data[f"p_{cat}_lens"]
            plane_end = np.cumsum(runs)
            k = 0
            for b, r in enumerate(rows):
                sh, sw = self.store.rows[r].sh, self.store.rows[r].sw
                out = np.empty((int(layers[b]), sh, sw), np.int64)
                for li in range(int(layers[b])):
                    lo, hi = int(plane_end[k] - runs[k]), int(plane_end[k])
                    out[li] = np.repeat(vals[lo:hi], lens[lo:hi]).reshape(sh, sw)
                    k += 1
                items[b]["pixel"][cat] = torch.from_numpy(out)
        for cat in self.categories:
            if cat in self.pixel:
                continue
            counts, vals = data[f"i_{cat}_counts"], data[f"i_{cat}_vals"]
            ends = np.cumsum(counts)
            for b in range(len(rows)):
                items[b]["image_level"][cat] = torch.from_numpy(vals[ends[b] - counts[b] : ends[b]].astype(np.int64))
        return items

    # ----------------------------------------------------------------- write
    def put(self, rows: Sequence[int], items: Sequence[dict]) -> None:
        """Store the label items of ``rows`` (as :meth:`get` returns them) as one segment."""
        if not self.writable:
            return
        try:
            data = self._encode(rows, items)
            buf = io.BytesIO()
            np.savez(buf, **data)
            if not self.folder.is_dir():  # a reader that writes into the store says so, once
                self.folder.mkdir(parents=True, exist_ok=True)
                log.info(
                    "label cache: keeping decoded label planes in %s for the next run (--no-label-cache: off)",
                    self.folder,
                )
            atomic_write_bytes(self._segment(rows), buf.getvalue())
            if self._total is None:
                self._total = sum(p.stat().st_size for p in self.folder.glob("*.npz"))
            else:
                self._total += buf.tell()
            if self._total > self.limit:
                self._trim()
        except PermissionError as e:
            self.writable = False
            log.info("label cache off: cannot write %s (%s); pass 2 decodes every label PNG", self.folder, e.strerror)
        except OSError as e:  # a full disk, a read-only filesystem: the run goes on without the cache
            self.writable = False
            log.info("label cache off: %s (%s)", self.folder, e.strerror or e)

    def _encode(self, rows: Sequence[int], items: Sequence[dict]) -> dict:
        data: dict = {"rows": np.asarray(rows, np.int64)}
        data["sig"] = np.asarray([s for r in rows for s in self._signature(r)], np.int64).reshape(-1, 2)
        for cat in self.pixel:
            layers, runs, vals, lens = [], [], [], []
            for it in items:
                planes = it["pixel"][cat].numpy()
                layers.append(planes.shape[0])
                for plane in planes:
                    v, n = rle_encode(plane)
                    runs.append(len(v))
                    vals.append(v)
                    lens.append(n)
            data[f"p_{cat}_layers"] = np.asarray(layers, np.int32)
            data[f"p_{cat}_runs"] = np.asarray(runs, np.int64)
            data[f"p_{cat}_vals"] = np.concatenate(vals).astype(np.int32) if vals else np.zeros(0, np.int32)
            data[f"p_{cat}_lens"] = np.concatenate(lens).astype(np.int32) if lens else np.zeros(0, np.int32)
        for cat in self.categories:
            if cat in self.pixel:
                continue
            lists = [it["image_level"][cat].numpy() for it in items]
            data[f"i_{cat}_counts"] = np.asarray([len(v) for v in lists], np.int64)
            data[f"i_{cat}_vals"] = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
        return data

    def _trim(self) -> None:
        """Remove the oldest segments while the cache exceeds its limit."""
        files = [(p.stat().st_mtime_ns, p.stat().st_size, p) for p in self.folder.glob("*.npz")]
        total = sum(s for _, s, _ in files)
        for _, size, p in sorted(files):
            if total <= self.limit * 0.9:  # some room, so the next segments do not trim again at once
                break
            try:
                p.unlink()
                total -= size
            except OSError:
                pass
        self._total = total
