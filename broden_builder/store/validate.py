"""Validate a Broden store: every file, every row. Problems name the file and the row."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from .errors import StoreFormatError
from .format import CATEGORY_COLUMNS, CATEGORY_MAP_COLUMNS, INDEX_FIXED_COLUMNS, LABEL_COLUMNS, SPLITS, decode_label_png, parse_category_cell
from .reader import BrodenStore, read_csv_file
from .statistics import LabelTally, layer_fractions


@dataclass(frozen=True)
class Problem:
    """One validation finding. ``row`` is the 1-based data row of ``file`` (0 = header), None for the file."""

    file: str
    row: Optional[int]
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        return f"{self.severity}: {where}: {self.message}"


def _check_header(root: Path, name: str, expected, problems: list, optional=()) -> None:
    path = root / name
    if not path.exists():
        problems.append(Problem(name, None, "file is missing"))
        return
    try:
        header, _ = read_csv_file(path)
    except StoreFormatError as e:
        problems.append(Problem(name, e.row, e.message))
        return
    want = [c for c in expected if c not in optional]
    if [h for h in header if h in expected] != [c for c in expected if c in header] or any(c not in header for c in want):
        problems.append(Problem(name, 0, f"malformed header {header}: expected {','.join(expected)}"))


def validate_store(root: Union[str, Path], check_images: bool = True, progress: bool = False) -> list:
    """Return the list of Problems found in the store at ``root`` (empty when valid)."""
    root = Path(root)
    problems: list = []
    if not root.is_dir():
        return [Problem(str(root), None, "store directory does not exist")]
    _check_header(root, "label.csv", LABEL_COLUMNS, problems, optional=("syns",))
    _check_header(root, "category.csv", CATEGORY_COLUMNS, problems)
    try:
        store = BrodenStore(root)
    except StoreFormatError as e:
        rel = str(Path(e.path).relative_to(root)) if Path(e.path).is_relative_to(root) else e.path
        problems.append(Problem(rel, e.row, e.message))
        return problems
    ours = bool(store.build_info)
    stat_severity = "error" if ours else "warning"
    if not store.rows:
        # nothing to dissect: an error, unless the recipe it was built from asked for an empty store
        wanted = bool((store.build_info.get("recipe") or {}).get("allow_empty"))
        problems.append(Problem("index.csv", None, "the store has no images"
                                + (" (its recipe asked for an empty store)" if wanted else ""),
                                "warning" if wanted else "error"))
    # label.csv
    names = Counter(l.name for l in store.labels)
    numbers = Counter(l.number for l in store.labels)
    for i, lab in enumerate(store.labels, start=1):
        if numbers[lab.number] > 1:
            problems.append(Problem("label.csv", i, f"duplicate label number {lab.number}"))
        if names[lab.name] > 1:
            problems.append(Problem("label.csv", i, f"duplicate label name {lab.name!r}"))
        if not lab.name:
            problems.append(Problem("label.csv", i, "empty label name"))
        if not lab.categories:
            problems.append(Problem("label.csv", i, f"label {lab.number} ({lab.name}) has no 'cat(count)' category "
                                    "(the original tools' reader cannot parse an empty category cell)"))
    # category maps
    for cat in store.categories:
        path = root / f"c_{cat}.csv"
        if not path.exists():
            used = any(r.cells[cat] for r in store.rows)
            problems.append(Problem(f"c_{cat}.csv", None, f"file is missing (category {cat!r} is a column of index.csv"
                                    + (")" if used else ", with no data)"), "error" if used else "warning"))
            continue
        _check_header(root, f"c_{cat}.csv", CATEGORY_MAP_COLUMNS, problems)
        codes = Counter(e.code for e in store.category_maps[cat])
        for j, e in enumerate(store.category_maps[cat], start=1):
            lab = store.label_by_number.get(e.number)
            if lab is None:
                problems.append(Problem(f"c_{cat}.csv", j, f"label number {e.number} is not in label.csv"))
            elif cat not in lab.categories:
                problems.append(Problem(f"c_{cat}.csv", j, f"label {e.number} ({lab.name}) is not in category {cat!r} in label.csv"))
            if codes[e.code] > 1:
                problems.append(Problem(f"c_{cat}.csv", j, f"duplicate code {e.code}"))
    for cat in store.category_info:
        if cat not in store.categories:
            problems.append(Problem("category.csv", None, f"category {cat!r} has no column in index.csv"))
    members = {c: {e.number for e in store.category_maps.get(c, [])} for c in store.categories}
    for lab in store.labels:
        for c in lab.categories:
            if c in members and lab.number not in members[c] and store.category_maps.get(c):
                problems.append(Problem(f"c_{c}.csv", None, f"label {lab.number} ({lab.name}) of category {c!r} is missing"))
    # index.csv rows
    seen = Counter(r.image for r in store.rows)
    tally = LabelTally()
    rows = store.rows
    if progress:
        from ..progress import progress as _progress
        rows = _progress(rows, desc="validate", unit="img")
    for row in rows:
        rn = row.index + 1
        if seen[row.image] > 1:
            problems.append(Problem("index.csv", rn, f"duplicate image {row.image!r}"))
        if row.split not in SPLITS:
            problems.append(Problem("index.csv", rn, f"split {row.split!r} is not one of {', '.join(SPLITS)}"))
        img_path = root / "images" / row.image
        if not img_path.exists():
            problems.append(Problem("index.csv", rn, f"image file images/{row.image} is missing"))
        elif check_images:
            try:
                with Image.open(img_path) as im:
                    im.load()
                    if im.size != (row.iw, row.ih):
                        problems.append(Problem("index.csv", rn, f"images/{row.image} is {im.size[0]}x{im.size[1]}, index says {row.iw}x{row.ih}"))
            except OSError as e:
                problems.append(Problem("index.csv", rn, f"images/{row.image} cannot be read ({e})"))
        for cat in store.categories:
            items = row.cells[cat]
            if cat in store.image_level_categories:
                nums = []
                for it in items:
                    try:
                        n = int(it)
                    except ValueError:
                        problems.append(Problem("index.csv", rn, f"column {cat!r}: {it!r} is not a label number"))
                        continue
                    if n == 0:
                        problems.append(Problem("index.csv", rn, f"column {cat!r}: label 0 (a dropped label; read as 'no label')", "warning"))
                        continue
                    nums.append(n)
                    lab = store.label_by_number.get(n)
                    if lab is None:
                        problems.append(Problem("index.csv", rn, f"column {cat!r}: label number {n} is not in label.csv"))
                    elif cat not in lab.categories:
                        problems.append(Problem("index.csv", rn, f"column {cat!r}: label {n} ({lab.name}) is not in category {cat!r}"))
                tally.add_image_level(cat, nums)
                continue
            layers = []
            for it in items:
                p = root / "images" / it
                if not p.exists():
                    problems.append(Problem("index.csv", rn, f"column {cat!r}: segmentation images/{it} is missing"))
                    continue
                try:
                    with Image.open(p) as im:
                        im.load()
                        arr = decode_label_png(np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im))
                except OSError as e:
                    problems.append(Problem("index.csv", rn, f"column {cat!r}: images/{it} cannot be read ({e})"))
                    continue
                if arr.shape != (row.sh, row.sw):
                    problems.append(Problem("index.csv", rn, f"column {cat!r}: images/{it} is {arr.shape[1]}x{arr.shape[0]}, index says {row.sw}x{row.sh}"))
                    continue
                for n in np.unique(arr):
                    n = int(n)
                    if n == 0:
                        continue
                    lab = store.label_by_number.get(n)
                    if lab is None:
                        problems.append(Problem("index.csv", rn, f"column {cat!r}: images/{it} holds label number {n}, not in label.csv"))
                    elif cat not in lab.categories:
                        problems.append(Problem("index.csv", rn, f"column {cat!r}: images/{it} holds label {n} ({lab.name}), not in category {cat!r}"))
                layers.append(arr)
            if layers:
                tally.add_pixel(cat, layer_fractions(layers))
    # statistics against the data
    for i, lab in enumerate(store.labels, start=1):
        counts = {c: tally.images.get((c, lab.number), 0) for c in set(lab.categories) | {c for (c, n) in tally.images if n == lab.number}}
        counts = {c: v for c, v in counts.items() if v or c in lab.categories}
        if {c: v for c, v in counts.items() if v} != {c: v for c, v in lab.categories.items() if v}:
            problems.append(Problem("label.csv", i, f"category counts {lab.categories} disagree with the data {counts}", stat_severity))
        freq = sum(counts.values())
        cov = sum(tally.coverage.get((c, lab.number), 0.0) for c in counts)
        if freq != lab.frequency:
            problems.append(Problem("label.csv", i, f"frequency {lab.frequency} of {lab.name!r} disagrees with the data ({freq})", stat_severity))
        if not math.isclose(cov, lab.coverage, rel_tol=1e-4, abs_tol=2e-6 * max(1, len(store.rows))):
            problems.append(Problem("label.csv", i, f"coverage {lab.coverage} of {lab.name!r} disagrees with the data ({cov:f})", stat_severity))
    for cat in store.categories:
        for j, e in enumerate(store.category_maps.get(cat, []), start=1):
            n = tally.images.get((cat, e.number), 0)
            if n != e.frequency:
                problems.append(Problem(f"c_{cat}.csv", j, f"frequency {e.frequency} of {e.name!r} disagrees with the data ({n})", stat_severity))
        info = store.category_info.get(cat)
        entries = store.category_maps.get(cat, [])
        if info is None:
            if entries:
                problems.append(Problem("category.csv", None, f"category {cat!r} is missing"))
            continue
        row = list(store.category_info).index(cat) + 1
        if entries:
            nums = [e.number for e in entries]
            if (info.first, info.last, info.count) != (min(nums), max(nums), len(nums)):
                problems.append(Problem("category.csv", row, f"{cat}: first/last/count {info.first}/{info.last}/{info.count} disagree with c_{cat}.csv ({min(nums)}/{max(nums)}/{len(nums)})"))
            if info.frequency != sum(e.frequency for e in entries):
                problems.append(Problem("category.csv", row, f"{cat}: frequency {info.frequency} disagrees with c_{cat}.csv ({sum(e.frequency for e in entries)})", stat_severity))
    return problems


def store_stats(root: Union[str, Path]) -> dict:
    """Counts per category and split: images carrying the category, and label count."""
    store = BrodenStore(root)
    splits = Counter(r.split for r in store.rows)
    out = {"images": len(store.rows), "splits": dict(splits), "categories": {}}
    for cat in store.categories:
        per_split = Counter(r.split for r in store.rows if r.cells[cat])
        out["categories"][cat] = {
            "labels": len(store.category_maps.get(cat, [])),
            "level": "image" if cat in store.image_level_categories else "pixel",
            "images": dict(per_split),
        }
    return out
