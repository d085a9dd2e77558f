"""Write a Broden store: rows (image + label PNGs) as they come, the CSV tables last.

Resumable: each finished row leaves a small JSON record under ``.staging/rows``; a
restarted build skips rows whose record exists. ``index.csv`` is written last, so a
store without it is visibly incomplete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from .atomic import atomic_write_jpeg, atomic_write_png, atomic_write_text
from .format import (
    CATEGORY_COLUMNS,
    CATEGORY_MAP_COLUMNS,
    INDEX_FIXED_COLUMNS,
    LABEL_COLUMNS,
    encode_label_png,
    format_category_cell,
    format_coverage,
    join_cell,
    layer_filename,
    order_categories,
    split_hash,
)
from .statistics import LabelTally, layer_fractions
from .paths import safe_category

STAGING = ".staging"


@dataclass(frozen=True)
class LabelSpec:
    """A global label to be written: number, name, synonyms, and the category to show if it has no data."""

    number: int
    name: str
    syns: tuple = ()
    category: str = ""


@dataclass
class RowRecord:
    """What the writer keeps per written row (JSON-serialisable)."""

    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    cells: dict  # category -> list of items (png paths or numbers)
    pixel_fractions: dict = field(default_factory=dict)  # category -> {label: fraction}
    image_level: dict = field(default_factory=dict)  # category -> [numbers]
    split_key: float = 0.0

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["pixel_fractions"] = {c: {str(k): v for k, v in f.items()} for c, f in self.pixel_fractions.items()}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RowRecord":
        d = json.loads(text)
        d["pixel_fractions"] = {c: {int(k): v for k, v in f.items()} for c, f in d["pixel_fractions"].items()}
        return cls(**d)


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, dialect="excel")  # excel dialect: CRLF line ends, minimal quoting
    w.writerow(header)
    for row in rows:
        w.writerow(row)
    return buf.getvalue()


class StoreWriter:
    """Writes rows into ``root/images`` and, on ``finalize``, the CSV tables, README.txt and build.json."""

    def __init__(
        self,
        root: Union[str, Path],
        image_level_categories: Iterable[str] = ("scene", "texture"),
        jpeg_quality: int = 75,
    ):
        self.root = Path(root)
        self.image_level = frozenset(image_level_categories)
        self.jpeg_quality = jpeg_quality
        self.staging = self.root / STAGING / "rows"
        self.staging.mkdir(parents=True, exist_ok=True)
        (self.root / "images").mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- rows
    def _record_path(self, image: str) -> Path:
        return self.staging / (hashlib.sha1(image.encode("utf-8")).hexdigest() + ".json")

    def has_row(self, image: str) -> bool:
        """True when the row for ``image`` (path relative to images/) was completely written before.

        A record that cannot be read back (truncated by a crash or power cut) counts as not
        written: it is removed and the row is redone.
        """
        p = self._record_path(image)
        if not p.exists():
            return False
        try:
            RowRecord.from_json(p.read_text("utf-8"))
            return True
        except (OSError, ValueError, TypeError, KeyError):
            p.unlink()
            return False

    def write_image(self, image: str, rgb: np.ndarray) -> None:
        atomic_write_jpeg(self.root / "images" / image, rgb, quality=self.jpeg_quality)

    def write_row(
        self,
        image: str,
        split: str,
        image_shape: tuple,
        seg_shape: tuple,
        pixel: Mapping[str, Sequence[np.ndarray]],
        image_level: Mapping[str, Sequence[int]],
        rgb: Optional[np.ndarray] = None,
        stacked: Iterable[str] = (),
    ) -> RowRecord:
        """Write one row. ``pixel`` layers hold global numbers at segmentation size.

        All-zero layers are dropped, except in ``stacked`` categories (ADE20K part levels), where
        every level is written as ``<base>_<cat>_<k>.png``, empty ones included (the original's
        layout). Image-level numbers are written as given, 0 (a dropped label) included.
        ``rgb`` (already at store size) is written as the JPEG unless None (then it must already be in place).
        """
        if rgb is not None:
            self.write_image(image, rgb)
        ih, iw = int(image_shape[0]), int(image_shape[1])
        base = image[:-4] if image.lower().endswith(".jpg") else image.rsplit(".", 1)[0]
        cells: dict = {}
        fractions: dict = {}
        sh, sw = int(seg_shape[0]), int(seg_shape[1])
        stacked = frozenset(stacked)
        for cat, layers in pixel.items():
            if cat in stacked:
                kept = [np.asarray(l) for l in layers]
            else:
                kept = [np.asarray(l) for l in layers if np.any(l)]
            paths = []
            for k, layer in enumerate(kept):
                if layer.shape != (sh, sw):
                    raise ValueError(
                        f"{image}: {cat} layer {k + 1} is {layer.shape}, expected segmentation size {(sh, sw)}"
                    )
                rel = layer_filename(base, cat, k, 2 if cat in stacked else len(kept))
                atomic_write_png(self.root / "images" / rel, encode_label_png(layer))
                paths.append(rel)
            cells[cat] = paths
            if any(np.any(l) for l in kept):
                fractions[cat] = layer_fractions(kept)
        levels = {}
        for cat, nums in image_level.items():
            uniq = []
            for n in nums:
                n = int(n)
                if n not in uniq:
                    uniq.append(n)
            cells[cat] = uniq
            levels[cat] = [n for n in uniq if n]
        rec = RowRecord(image, split, ih, iw, int(sh), int(sw), cells, fractions, levels, split_hash(image))
        atomic_write_text(self._record_path(image), rec.to_json())
        return rec

    def records(self) -> list[RowRecord]:
        return [RowRecord.from_json(p.read_text("utf-8")) for p in sorted(self.staging.glob("*.json"))]

    # ----------------------------------------------------------------- tables
    def finalize(
        self,
        labels: Sequence[LabelSpec],
        build_info: Mapping,
        readme: str,
        records: Optional[Sequence[RowRecord]] = None,
        keep_staging: bool = False,
        native: Optional[Mapping[int, Mapping[str, tuple]]] = None,
    ) -> None:
        """Write label.csv, category.csv, c_*.csv, README.txt, build.json, then index.csv (last).

        ``native`` (label number -> category -> (images, coverage)): the statistics printed in
        label.csv, c_*.csv and category.csv, as the original did (the sources' native-resolution
        counts that decided the numbering, the same at every output size). Without it the tables
        print the statistics of the rows written. Either way build.json's ``written_statistics``
        holds those of the planes written, which ``broden validate`` checks exactly. Rows are
        ordered by the split key (md5 of the path).
        """
        records = list(self.records() if records is None else records)
        records.sort(key=lambda r: (r.split_key, r.image))
        tally = LabelTally()
        for r in records:
            tally.add_record(r)
        tables = compute_tables(labels, tally, native)
        categories = tables["categories"]
        for cat in sorted({c for r in records for c in r.cells}):
            if cat not in categories:
                categories.append(cat)
        atomic_write_text(self.root / "label.csv", _csv_text(LABEL_COLUMNS, tables["label_rows"]))
        atomic_write_text(self.root / "category.csv", _csv_text(CATEGORY_COLUMNS, tables["category_rows"]))
        for cat in categories:
            safe_category(cat)  # a file name inside the store; the build checked it earlier, naming the source
        for cat in categories:
            atomic_write_text(
                self.root / f"c_{cat}.csv", _csv_text(CATEGORY_MAP_COLUMNS, tables["map_rows"].get(cat, []))
            )
        info = dict(build_info)
        info["categories"] = categories
        info["image_level_categories"] = sorted(c for c in categories if c in self.image_level)
        info["statistics"] = (
            "label.csv, c_*.csv, category.csv: native-resolution source statistics (they decided "
            "the numbering); written_statistics: the label planes written"
            if native is not None
            else "computed from the written label planes"
        )
        info["written_statistics"] = written_statistics(tally)
        atomic_write_text(self.root / "README.txt", readme)
        atomic_write_text(self.root / "build.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
        index_rows = []
        for r in records:
            index_rows.append(
                [r.image, r.split, r.ih, r.iw, r.sh, r.sw] + [join_cell(r.cells.get(c, [])) for c in categories]
            )
        atomic_write_text(self.root / "index.csv", _csv_text(list(INDEX_FIXED_COLUMNS) + categories, index_rows))
        if not keep_staging:
            shutil.rmtree(self.root / STAGING, ignore_errors=True)


def written_statistics(tally: LabelTally) -> dict:
    """build.json's ``written_statistics``: {"<number>": {"<category>": [images, coverage]}} of the planes written."""
    out: dict = {}
    for (cat, num), n in sorted(tally.images.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.setdefault(str(num), {})[cat] = [int(n), float(tally.coverage[(cat, num)])]
    return out


def compute_tables(labels: Sequence[LabelSpec], tally: LabelTally, native: Optional[Mapping] = None) -> dict:
    """Rows of label.csv, category.csv and c_*.csv, plus the category order.

    Statistics from ``native`` (number -> category -> (images, coverage)) when given, else from the tally.
    """
    per_label: dict = {}
    if native is not None:
        for num, cats in native.items():
            for cat, (n, cov) in cats.items():
                if n:
                    per_label.setdefault(int(num), {})[cat] = (int(n), float(cov))
    else:
        for (cat, num), n in tally.images.items():
            per_label.setdefault(num, {})[cat] = (n, tally.coverage[(cat, num)])
    label_rows = []
    first: dict = {}
    for spec in sorted(labels, key=lambda s: s.number):
        stats = per_label.get(spec.number, {})
        counts = {c: v[0] for c, v in stats.items()}
        if not counts and spec.category:
            counts = {spec.category: 0}
        freq = sum(v[0] for v in stats.values())
        cov = sum(v[1] for v in stats.values())
        label_rows.append(
            [spec.number, spec.name, format_category_cell(counts), freq, format_coverage(cov), join_cell(spec.syns)]
        )
        for c in counts:
            first[c] = min(first.get(c, spec.number), spec.number)
    categories = order_categories(first)
    category_rows = []
    map_rows: dict = {}
    for cat in categories:
        members = [
            (s.number, s.name) + per_label.get(s.number, {}).get(cat, (0, 0.0))
            for s in labels
            if cat in per_label.get(s.number, {}) or (not per_label.get(s.number) and s.category == cat)
        ]
        members.sort(key=lambda m: (-m[2], -m[3], m[0]))
        map_rows[cat] = [
            [code, num, name, n, format_coverage(cov)] for code, (num, name, n, cov) in enumerate(members, start=1)
        ]
        nums = [m[0] for m in members]
        category_rows.append([cat, min(nums), max(nums), len(nums), sum(m[2] for m in members)])
    return {"label_rows": label_rows, "category_rows": category_rows, "map_rows": map_rows, "categories": categories}
