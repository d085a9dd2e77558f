"""Validate a Broden store: every file, every row. Problems name the file and the row."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from .commit import pending_commit, pending_message, read_plan
from .errors import StoreFormatError
from .paths import UnsafePathError
from .format import CATEGORY_COLUMNS, CATEGORY_MAP_COLUMNS, LABEL_COLUMNS, SPLITS, load_whole, read_label_png
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
    if [h for h in header if h in expected] != [c for c in expected if c in header] or any(
        c not in header for c in want
    ):
        problems.append(Problem(name, 0, f"malformed header {header}: expected {','.join(expected)}"))


def check_pending_commit(root: Path, problems: list) -> bool:
    """An interrupted commit (store/commit.py) makes the store unreadable until completed. True when found."""
    try:
        marker = pending_commit(root)
        if marker is None:
            return False
        read_plan(root)  # a plan naming paths outside the store is refused, not recommended for recovery
    except (UnsafePathError, ValueError) as e:
        problems.append(Problem(str(root), None, str(e)))
        return True
    problems.append(Problem(str(marker.relative_to(root)), None, pending_message(root)))
    return True


def check_not_empty(store: BrodenStore, problems: list) -> None:
    """A store without images is invalid (nothing to dissect), unless its recipe asked for an empty store."""
    if store.rows:
        return
    wanted = bool((store.build_info.get("recipe") or {}).get("allow_empty"))
    problems.append(
        Problem(
            "index.csv",
            None,
            "the store has no images" + (" (its recipe asked for an empty store)" if wanted else ""),
            "warning" if wanted else "error",
        )
    )


class _ValidatingStore(BrodenStore):
    """The store as validate reads it: a longer row or an unknown split is listed with every other
    problem (check_row_widths, check_rows) instead of refusing the store at the first."""

    _lenient_rows = True


def check_row_widths(root: Path, problems: list) -> None:
    """Every index.csv row has exactly as many cells as the header (a longer row hides data)."""
    path = root / "index.csv"
    try:
        header, rows = read_csv_file(path)
    except StoreFormatError:
        return  # reported by the reader
    for r, row in enumerate(rows, start=1):
        if len(row) > len(header):
            problems.append(Problem("index.csv", r, f"row has {len(row)} cells, the header {len(header)}"))
        elif len(row) < len(header):
            problems.append(
                Problem(
                    "index.csv",
                    r,
                    f"row has {len(row)} cells, the header {len(header)} (missing trailing cells read as empty)",
                    "warning",
                )
            )


def check_labels(store: BrodenStore, problems: list) -> None:
    """label.csv: unique numbers and names, a name and a category for each label."""
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
            problems.append(
                Problem(
                    "label.csv",
                    i,
                    f"label {lab.number} ({lab.name}) has no 'cat(count)' category "
                    "(the original tools' reader cannot parse an empty category cell)",
                )
            )


def check_category_maps(store: BrodenStore, problems: list) -> None:
    """c_<cat>.csv: present for used categories, numbers known and in the category, unique codes."""
    root = store.root
    for cat in store.categories:
        path = root / f"c_{cat}.csv"
        if not path.exists():
            used = any(r.cells[cat] for r in store.rows)
            problems.append(
                Problem(
                    f"c_{cat}.csv",
                    None,
                    f"file is missing (category {cat!r} is a column of index.csv"
                    + (")" if used else ", with no data)"),
                    "error" if used else "warning",
                )
            )
            continue
        _check_header(root, f"c_{cat}.csv", CATEGORY_MAP_COLUMNS, problems)
        codes = Counter(e.code for e in store.category_maps[cat])
        for j, e in enumerate(store.category_maps[cat], start=1):
            lab = store.label_by_number.get(e.number)
            if lab is None:
                problems.append(Problem(f"c_{cat}.csv", j, f"label number {e.number} is not in label.csv"))
            elif cat not in lab.categories:
                problems.append(
                    Problem(f"c_{cat}.csv", j, f"label {e.number} ({lab.name}) is not in category {cat!r} in label.csv")
                )
            if codes[e.code] > 1:
                problems.append(Problem(f"c_{cat}.csv", j, f"duplicate code {e.code}"))
    for cat in store.category_info:
        if cat not in store.categories:
            problems.append(Problem("category.csv", None, f"category {cat!r} has no column in index.csv"))
    members = {c: {e.number for e in store.category_maps.get(c, [])} for c in store.categories}
    for lab in store.labels:
        for c in lab.categories:
            if c in members and lab.number not in members[c] and store.category_maps.get(c):
                problems.append(
                    Problem(f"c_{c}.csv", None, f"label {lab.number} ({lab.name}) of category {c!r} is missing")
                )


def check_image_level_cell(store: BrodenStore, rn: int, cat: str, items, problems: list) -> list:
    """Numbers of one image-level cell; unknown numbers and numbers of another category are problems."""
    nums = []
    for it in items:
        try:
            n = int(it)
        except ValueError:
            problems.append(Problem("index.csv", rn, f"column {cat!r}: {it!r} is not a label number"))
            continue
        if n == 0:
            continue  # a source label the frequency filter dropped, as the original wrote it: 'no label'
        nums.append(n)
        lab = store.label_by_number.get(n)
        if lab is None:
            problems.append(Problem("index.csv", rn, f"column {cat!r}: label number {n} is not in label.csv"))
        elif cat not in lab.categories:
            problems.append(
                Problem("index.csv", rn, f"column {cat!r}: label {n} ({lab.name}) is not in category {cat!r}")
            )
    return nums


def label_number_problems(store: BrodenStore) -> list:
    """The label-number problems validate would report, from the tables alone (no image decoded):
    duplicate numbers in label.csv, unknown numbers in c_*.csv and in image-level cells.
    ``dissect`` refuses a store with any of them before its first pass."""
    problems: list = []
    numbers = Counter(l.number for l in store.labels)
    for i, lab in enumerate(store.labels, start=1):
        if numbers[lab.number] > 1:
            problems.append(Problem("label.csv", i, f"duplicate label number {lab.number}"))
    for cat in store.categories:
        for j, e in enumerate(store.category_maps.get(cat, []), start=1):
            if e.number not in store.label_by_number:
                problems.append(Problem(f"c_{cat}.csv", j, f"label number {e.number} is not in label.csv"))
    for row in store.rows:
        for cat in store.categories:
            if cat in store.image_level_categories and row.cells[cat]:
                sub: list = []
                check_image_level_cell(store, row.index + 1, cat, row.cells[cat], sub)
                problems += [p for p in sub if p.severity == "error"]
    return problems


def _confined_or_problem(store: BrodenStore, rel: str, rn: int, what: str, problems: list) -> Optional[Path]:
    try:
        return store.resolve(rel, rn - 1)
    except StoreFormatError as e:
        problems.append(Problem("index.csv", rn, f"{what}{e.message}"))
        return None


def check_image(store: BrodenStore, row, problems: list, decode: bool = True) -> None:
    """A row's image: confined, present, and (``decode``) readable at the recorded size."""
    rn = row.index + 1
    img_path = _confined_or_problem(store, row.image, rn, "", problems)
    if img_path is None:
        return
    if not img_path.is_file():
        problems.append(Problem("index.csv", rn, f"image file images/{row.image} is missing"))
        return
    if not decode:
        return
    try:
        with Image.open(img_path) as im:
            if im.size != (row.iw, row.ih):
                problems.append(
                    Problem(
                        "index.csv",
                        rn,
                        f"images/{row.image} is {im.size[0]}x{im.size[1]}, index says {row.iw}x{row.ih}",
                    )
                )
            else:
                load_whole(im)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        problems.append(Problem("index.csv", rn, f"images/{row.image} cannot be read ({e})"))


def check_rows(store: BrodenStore, problems: list, check_images: bool = True, progress: bool = False) -> LabelTally:
    """Every index.csv row: unique image, known split, files present, confined and readable at the
    recorded sizes (the format's one decoder), label numbers known and in their category.
    Returns the statistics counted from the data (for check_statistics)."""
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
        check_image(store, row, problems, check_images)
        for cat in store.categories:
            items = row.cells[cat]
            if cat in store.image_level_categories:
                tally.add_image_level(cat, check_image_level_cell(store, rn, cat, items, problems))
                continue
            layers = []
            for it in items:
                p = _confined_or_problem(store, it, rn, f"column {cat!r}: ", problems)
                if p is None:
                    continue
                if not p.is_file():
                    problems.append(Problem("index.csv", rn, f"column {cat!r}: segmentation images/{it} is missing"))
                    continue
                try:
                    arr = read_label_png(p, (row.sh, row.sw))
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    problems.append(Problem("index.csv", rn, f"column {cat!r}: images/{it} cannot be read ({e})"))
                    continue
                for n in np.unique(arr):
                    n = int(n)
                    if n == 0:
                        continue
                    lab = store.label_by_number.get(n)
                    if lab is None:
                        problems.append(
                            Problem(
                                "index.csv", rn, f"column {cat!r}: images/{it} holds label number {n}, not in label.csv"
                            )
                        )
                    elif cat not in lab.categories:
                        problems.append(
                            Problem(
                                "index.csv",
                                rn,
                                f"column {cat!r}: images/{it} holds label {n} ({lab.name}), not in category {cat!r}",
                            )
                        )
                layers.append(arr)
            if layers:
                tally.add_pixel(cat, layer_fractions(layers))
    return tally


def check_orphans(store: BrodenStore, problems: list, severity: str = "error") -> None:
    """Files under images/ that no row names (e.g. left by an interrupted change); hidden files are ignored."""
    named = set()
    for row in store.rows:
        named.add(row.image)
        for cat in store.pixel_categories:
            named.update(row.cells[cat])
    base = store.root / "images"
    if not base.is_dir():
        return
    orphans = []
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")
            if rel not in named:
                orphans.append(rel)
    for rel in sorted(orphans)[:20]:
        problems.append(Problem(f"images/{rel}", None, "no index.csv row names this file (orphan)", severity))
    if len(orphans) > 20:
        problems.append(Problem("images/", None, f"... and {len(orphans) - 20} more orphan file(s)", severity))


def _check_category_row(store: BrodenStore, cat: str, problems: list, severity: str = "error") -> None:
    """category.csv's row of ``cat`` against c_<cat>.csv: present, first/last/count, and the frequency sum
    (reported with ``severity``)."""
    info = store.category_info.get(cat)
    entries = store.category_maps.get(cat, [])
    if info is None:
        if entries:
            problems.append(Problem("category.csv", None, f"category {cat!r} is missing"))
        return
    row = list(store.category_info).index(cat) + 1
    if entries:
        nums = [e.number for e in entries]
        if (info.first, info.last, info.count) != (min(nums), max(nums), len(nums)):
            problems.append(
                Problem(
                    "category.csv",
                    row,
                    f"{cat}: first/last/count {info.first}/{info.last}/"
                    f"{info.count} disagree with c_{cat}.csv ({min(nums)}/{max(nums)}/{len(nums)})",
                )
            )
        if info.frequency != sum(e.frequency for e in entries):
            problems.append(
                Problem(
                    "category.csv",
                    row,
                    f"{cat}: frequency {info.frequency} disagrees with "
                    f"c_{cat}.csv ({sum(e.frequency for e in entries)})",
                    severity,
                )
            )


def check_statistics(store: BrodenStore, tally: LabelTally, problems: list, severity: str) -> None:
    """label.csv, c_*.csv and category.csv statistics against the counts from the data."""
    for i, lab in enumerate(store.labels, start=1):
        counts = {
            c: tally.images.get((c, lab.number), 0)
            for c in set(lab.categories) | {c for (c, n) in tally.images if n == lab.number}
        }
        counts = {c: v for c, v in counts.items() if v or c in lab.categories}
        if {c: v for c, v in counts.items() if v} != {c: v for c, v in lab.categories.items() if v}:
            problems.append(
                Problem("label.csv", i, f"category counts {lab.categories} disagree with the data {counts}", severity)
            )
        freq = sum(counts.values())
        cov = sum(tally.coverage.get((c, lab.number), 0.0) for c in counts)
        if freq != lab.frequency:
            problems.append(
                Problem(
                    "label.csv",
                    i,
                    f"frequency {lab.frequency} of {lab.name!r} disagrees with the data ({freq})",
                    severity,
                )
            )
        if not math.isclose(cov, lab.coverage, rel_tol=1e-4, abs_tol=2e-6 * max(1, len(store.rows))):
            problems.append(
                Problem(
                    "label.csv",
                    i,
                    f"coverage {lab.coverage} of {lab.name!r} disagrees with the data ({cov:f})",
                    severity,
                )
            )
    for cat in store.categories:
        for j, e in enumerate(store.category_maps.get(cat, []), start=1):
            n = tally.images.get((cat, e.number), 0)
            if n != e.frequency:
                problems.append(
                    Problem(
                        f"c_{cat}.csv",
                        j,
                        f"frequency {e.frequency} of {e.name!r} disagrees with the data ({n})",
                        severity,
                    )
                )
        _check_category_row(store, cat, problems, severity)


def check_written_statistics(store: BrodenStore, tally: LabelTally, written: dict, problems: list) -> None:
    """build.json ``written_statistics`` against the planes read back; label.csv / c_*.csv /
    category.csv consistency."""
    got = {(c, n): (k, tally.coverage[(c, n)]) for (c, n), k in tally.images.items() if k}
    want = {}
    for num, cats in written.items():
        for c, (k, cov) in cats.items():
            want[(c, int(num))] = (int(k), float(cov))
    for key in sorted(set(got) | set(want), key=lambda k: (k[1], k[0])):
        (c, n), g, w = key, got.get(key, (0, 0.0)), want.get(key, (0, 0.0))
        if g[0] != w[0] or not math.isclose(g[1], w[1], rel_tol=1e-9, abs_tol=1e-9):
            problems.append(
                Problem(
                    "build.json",
                    None,
                    f"written_statistics of label {n} in {c!r}: {w[0]} images, "
                    f"coverage {w[1]:f}; the planes give {g[0]} images, coverage {g[1]:f}",
                )
            )
    for i, lab in enumerate(store.labels, start=1):
        if lab.frequency != sum(lab.categories.values()):
            problems.append(
                Problem(
                    "label.csv",
                    i,
                    f"frequency {lab.frequency} of {lab.name!r} is not the sum of its category counts {lab.categories}",
                )
            )
        for c, k in lab.categories.items():
            entry = next((e for e in store.category_maps.get(c, []) if e.number == lab.number), None)
            if k and entry is not None and entry.frequency != k:
                problems.append(
                    Problem(
                        f"c_{c}.csv",
                        None,
                        f"frequency {entry.frequency} of {lab.name!r} disagrees with label.csv ({c}({k}))",
                    )
                )
    for cat in store.categories:
        _check_category_row(store, cat, problems)


def _validate_shards(spec: str) -> list:
    """Problems of a shard list (``DIR/shard-{000000..000009}.tar``): opening it checks that it names
    every shard of its shards.json and each shard's size and sha256, and the tables' row count."""
    from .reader import ShardStore

    try:
        ShardStore(spec)
    except StoreFormatError as e:
        return [Problem(str(e.path), e.row, e.message)]
    return []


def validate_store(root: Union[str, Path], check_images: bool = True, progress: bool = False) -> list:
    """Return the list of Problems found in the store at ``root`` (empty when valid). A shard list
    (``DIR/shard-{...}.tar``, written by ``broden export``) is checked against its shards.json.

    Runs the checkers in order: pending commit, table headers, the reader (which refuses
    malformed tables and paths leaving STORE/images), row widths, labels, category maps,
    rows (files, sizes, numbers), orphan files, statistics. Statistics disagreeing with
    the data and orphans are errors for stores this toolkit built (build.json present),
    warnings for other stores (e.g. the original archives).
    """
    if str(root).endswith(".tar"):  # a shard list: every shard's size and sha256 against shards.json
        return _validate_shards(str(root))
    root = Path(root)
    problems: list = []
    if not root.is_dir():
        return [Problem(str(root), None, "store directory does not exist")]
    if check_pending_commit(root, problems):
        return problems
    _check_header(root, "label.csv", LABEL_COLUMNS, problems, optional=("syns",))
    _check_header(root, "category.csv", CATEGORY_COLUMNS, problems)
    try:
        store = _ValidatingStore(root)
    except StoreFormatError as e:
        rel = str(Path(e.path).relative_to(root)) if Path(e.path).is_relative_to(root) else e.path
        problems.append(Problem(rel, e.row, e.message))
        return problems
    ours = bool(store.build_info)
    severity = "error" if ours else "warning"
    check_not_empty(store, problems)
    check_row_widths(root, problems)
    check_labels(store, problems)
    check_category_maps(store, problems)
    tally = check_rows(store, problems, check_images, progress)
    check_orphans(store, problems, severity)
    written = store.build_info.get("written_statistics") if ours else None
    if isinstance(written, dict):
        # our stores print native-resolution statistics in the tables (as the original did); the
        # written planes' statistics are in build.json, checked exactly
        check_written_statistics(store, tally, written, problems)
    else:
        check_statistics(store, tally, problems, severity)
    return problems


def store_stats(root: Union[str, Path]) -> dict:
    """Counts per category and split: images carrying the category, and label count; ``predicted``:
    the labels a segmentation model predicted, per model and category (:func:`predicted_summary`)."""
    store = BrodenStore(root)
    splits = Counter(r.split for r in store.rows)
    out: dict = {"images": len(store.rows), "splits": dict(splits), "categories": {}}
    for cat in store.categories:
        per_split = Counter(r.split for r in store.rows if r.cells[cat])
        out["categories"][cat] = {
            "labels": len(store.category_maps.get(cat, [])),
            "level": "image" if cat in store.image_level_categories else "pixel",
            "images": dict(per_split),
        }
    out["predicted"] = predicted_summary(store)
    return out


def predicted_summary(store: BrodenStore) -> dict:
    """{model: {category: labels}} of the labels a segmentation model predicted (build.json
    ``predicted_labels``), told apart from annotated ones; {} for a store of annotations only."""
    out: dict = {}
    for name, rec in (store.build_info.get("predicted_labels") or {}).items():
        if not isinstance(rec, dict):
            continue
        for m in rec.get("models") or []:
            model = str(m.get("model")) if isinstance(m, dict) else str(m)
            cat = str(rec.get("category", "?"))
            out.setdefault(model, {}).setdefault(cat, 0)
            out[model][cat] += 1
    return out
