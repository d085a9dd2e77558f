"""``broden add``: extend an existing store with one more source, renumbering nothing.

Contract:
- every existing label keeps its number and name; new labels take numbers after the
  largest existing one (the unifier's ``reserved`` mode); new source labels that share a
  name (or an existing synonym) with an existing label join it, following the usual
  synonym rules. A join across categories ("mouse" the device into "mouse" the animal)
  is reported as a possible clash of senses; ``on_collision: error`` refuses instead.
- existing rows are not touched: their index.csv lines keep their bytes (when the source
  brings a new category, each old line only gains one empty trailing cell per new
  column, so that CSV readers keyed by header still work), their images and PNGs are
  not rewritten, and new rows are appended after them (row numbers stay valid).
- category codes (c_<category>.csv) of existing labels are kept; new labels are appended.
- statistics: a store whose tables print native-resolution statistics (build.json has
  ``written_statistics``) keeps its labels' printed statistics and adds the new source
  labels' native ones; the written planes' statistics (existing read back, new as written)
  go to build.json. Older stores get all statistics recomputed from the planes. Then, with build.json (which gains an ``additions`` entry), README.txt
  and index.csv, committed in one step: everything is first written under
  ``<store>/.broden-add/``; a ``COMMIT`` marker then makes the change final, and an
  interrupted commit is completed by the next ``broden add`` (or ``broden recover``,
  :func:`recover`); until then every reader refuses the store (store/commit.py).
  Until the marker exists the store is unchanged. The whole command holds the store's
  exclusive lock (store/locking.py): a second ``broden add`` is refused, never interleaved.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from . import __version__
from .build import (COLOR_SOURCE, build_date, gather_records, instantiate_sources, predicted_labels,
                    source_labels_from_stats, stage_images, vocabulary_lookups, worker_state, write_images)
from .errors import BrodenError
from .recipe import read_yaml, recipe_from_dict
from .store.atomic import atomic_write_text
from .store.format import INDEX_FIXED_COLUMNS, join_cell
from .store.paths import UnsafePathError, safe_category
from .store.reader import BrodenStore
from .store.statistics import LabelTally, layer_fractions
from .store.writer import LabelSpec, StoreWriter, compute_tables, written_statistics
from .unify import SourceLabel, UnifyError, check_same_source, unify
from .words import count

log = logging.getLogger(__name__)

WORK = ".broden-add"
STORE_SOURCE = "\x00store"  # source key of the existing labels inside the unifier (cannot clash with a prefix)


class ExtendError(BrodenError, RuntimeError):
    """``broden add`` refuses (the message says why); the store is left as it was."""


@dataclass
class AddReport:
    """What ``broden add`` did."""

    images: int = 0
    skipped: list = field(default_factory=list)
    new_labels: list = field(default_factory=list)  # (number, name, category)
    joined: list = field(default_factory=list)  # (number, name, category, via name)
    collisions: list = field(default_factory=list)  # messages
    new_categories: list = field(default_factory=list)
    seconds: float = 0.0
    completed_interrupted: bool = False  # this run only completed the interrupted commit of the same addition

    def summary(self) -> str:
        if self.completed_interrupted:
            return f"completed the interrupted addition ({self.images} images); the store is up to date"
        lines = [f"{count(self.images, 'image')} added in {self.seconds:.1f} s"]
        if self.new_categories:
            lines.append("new categories: " + ", ".join(self.new_categories))
        lines.append(f"{len(self.new_labels)} new label(s)" + (": " + ", ".join(f"{n} {nm} ({c})" for n, nm, c in self.new_labels[:30]) if self.new_labels else ""))
        if self.joined:
            lines.append(f"{len(self.joined)} source label(s) joined existing labels: "
                         + ", ".join(f"{nm}->{n}" for n, nm, _, _ in self.joined[:30]))
        for c in self.collisions:
            lines.append(f"warning: {c}")
        for where, why in self.skipped[:20]:
            lines.append(f"skipped {where}: {why}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- input
def load_source_entry(path: Union[str, Path]) -> dict:
    """Read a YAML file holding one source entry ({type: ..., ...}; a one-item list or {sources: [...]} works too)."""
    path = Path(path)
    data = read_yaml(path, ExtendError, "source file")
    if isinstance(data, Mapping) and "sources" in data and "type" not in data:
        data = data["sources"]
    if isinstance(data, list):
        if len(data) != 1:
            raise ExtendError(f"{path}: holds {len(data)} source entries; 'broden add' takes exactly one")
        data = data[0]
    if not isinstance(data, Mapping) or "type" not in data:
        raise ExtendError(f"{path}: expected one source entry, a mapping with a 'type' (e.g. type: coco), got {data!r}")
    return dict(data)


def store_recipe_dict(store: BrodenStore) -> dict:
    """The build parameters of an existing store (build.json, or inferred for original archives)."""
    rec = dict(store.build_info.get("recipe") or {})
    rec.pop("sources", None)
    rec.pop("dissect", None)
    if not rec:
        if not store.rows:
            raise ExtendError(f"{store.root}: no build.json and no rows to infer the image size from")
        r0 = store.rows[0]
        rec = {"name": store.root.name, "size": r0.ih, "segmentation_size": r0.sh, "color": "color" in store.categories}
    return rec


def tally_store(store: BrodenStore, quiet: bool = True) -> LabelTally:
    """Statistics of the existing rows, read from their label planes (as validate_store counts them)."""
    from .progress import progress

    tally = LabelTally()
    for row in progress(store.rows, quiet, desc="read store", unit="img"):
        for cat in store.categories:
            if cat in store.image_level_categories:
                tally.add_image_level(cat, store.image_labels(row.index, cat))
            else:
                layers = store.pixel_layers(row.index, cat)
                if layers:
                    tally.add_pixel(cat, layer_fractions(layers))
    return tally


# ----------------------------------------------------------------------------- commit
_LAST_PLAN: dict = {}


def recover(root: Union[str, Path]) -> bool:
    """Finish an interrupted commit (COMMIT marker present) or drop an uncommitted ``broden add``.
    True when one was finished. Call it under the store's lock (``broden recover`` does)."""
    from .store.commit import complete, drop_work, sweep_trash

    root = Path(root)
    plan = complete(root)
    sweep_trash(root)
    if plan is not None:
        _LAST_PLAN[str(root)] = plan
        return True
    if (root / WORK).exists():
        drop_work(root, root / WORK)
    return False


def entry_digest(entry: Mapping[str, Any]) -> str:
    """Identifies a source entry (to recognise the rerun of an interrupted addition)."""
    return hashlib.sha256(json.dumps(dict(entry), sort_keys=True, default=str).encode()).hexdigest()


def _commit(root: Path, work: Path, tables: dict, images: list, meta: dict) -> None:
    from .store.commit import decide

    tdir = work / "tables"
    order = sorted(n for n in tables if n != "index.csv") + ["index.csv"]
    for name in order:
        atomic_write_text(tdir / name, tables[name])
    moves = [(f"images/{rel}", f"images/{rel}") for rel in images] + [(f"tables/{n}", n) for n in order]
    decide(root, work, moves, meta=meta)
    recover(root)


# ----------------------------------------------------------------------------- add
def add_source(
    store_dir: Union[str, Path],
    entry: Mapping[str, Any],
    origin: str = "<source>",
    workers: int = 1,
    quiet: bool = False,
    strict: bool = True,
    on_collision: Optional[str] = None,
) -> AddReport:
    """Extend the store at ``store_dir`` with the images of one source entry (see the module docstring).

    Raises ExtendError (the store unchanged), LockedError (another process writes the store).
    Rerunning an addition whose commit was interrupted completes it and reports it done.
    """
    from .store.locking import exclusive

    root = Path(store_dir)
    if not root.is_dir():
        raise ExtendError(f"{root}: store directory does not exist")
    from .store.commit import is_store_folder

    if not is_store_folder(root):
        raise ExtendError(f"{root}: not a Broden store (no index.csv or label.csv); nothing was written there")
    with exclusive(root, "broden add"):
        return _add_locked(root, entry, origin, workers, quiet, strict, on_collision)


def _add_locked(root: Path, entry, origin, workers, quiet, strict, on_collision) -> AddReport:
    t0 = time.time()
    digest = entry_digest(entry)
    if recover(root):
        plan = _LAST_PLAN.pop(str(root), {})
        meta = plan.get("meta", {})
        log.warning("%s: completed an interrupted 'broden add' of %s", root, meta.get("origin", "a source"))
        if meta.get("entry") == digest:  # this very addition: it is now done
            return AddReport(images=int(meta.get("images", 0)), completed_interrupted=True,
                             seconds=time.time() - t0)
    if not (root / "index.csv").is_file():
        raise ExtendError(f"{root}: not a finished store (no index.csv)")
    store = BrodenStore(root)
    on_collision = on_collision or str(entry.get("on_collision", "merge"))
    if on_collision not in ("merge", "error"):
        raise ExtendError(f"{origin}: on_collision must be 'merge' or 'error', got {on_collision!r}")
    base = store_recipe_dict(store)
    recipe = recipe_from_dict({**base, "sources": [dict(entry)]}, origin=origin, base_dir=Path.cwd())
    (src,) = instantiate_sources(recipe)
    src.check()
    report = AddReport()
    image_level = _check_categories(store, src, origin)
    if recipe.color and "color" not in store.categories:
        recipe = recipe_from_dict({**recipe.to_dict(), "color": False}, origin=origin)
    tasks = gather_records([src])
    existing = {r.image for r in store.rows}
    clash = [f"{src.prefix}/{rec.basename}.jpg" for _, rec in tasks if f"{src.prefix}/{rec.basename}.jpg" in existing]
    if clash:
        raise ExtendError(f"{origin}: {len(clash)} image(s) are already in {root} (e.g. images/{clash[0]}); "
                          f"give the source a distinct 'prefix' or leave those images out")
    if not tasks:
        raise ExtendError(f"{origin}: the source lists no images")
    work = root / WORK
    shutil.rmtree(work, ignore_errors=True)
    try:
        state = worker_state([src], work, recipe, image_level)
        vocab, records = _write_new_rows(store, src, tasks, state, origin, on_collision, report,
                                         (workers, quiet, strict))
        out = _new_tables(store, src, recipe, vocab, records, origin, report, image_level, quiet)
        report.seconds = time.time() - t0
        images = sorted(p.relative_to(work / "images").as_posix() for p in (work / "images").rglob("*") if p.is_file())
        for rel in images:
            if (root / "images" / rel).exists():
                raise ExtendError(f"{origin}: images/{rel} already exists in {root}; refusing to overwrite it")
        _commit(root, work, out, images, {"command": "broden add", "origin": origin, "entry": digest,
                                          "images": report.images})
    except BaseException:
        if not (work / "COMMIT").exists():
            shutil.rmtree(work, ignore_errors=True)
        raise
    report.seconds = time.time() - t0
    return report


def _check_categories(store: BrodenStore, src, origin: str) -> set:
    """A category keeps its kind (pixel or image-level); returns the image-level categories after the addition."""
    vocab_src = src.vocabulary()
    src_image_level = set(src.image_level_categories())
    for c in vocab_src:
        try:
            safe_category(c, f"{origin}: category")
        except UnsafePathError as e:
            raise ExtendError(str(e)) from None
        if c in store.categories and (c in src_image_level) != (c in store.image_level_categories):
            kind = "image-level" if c in store.image_level_categories else "pixel"
            raise ExtendError(f"{origin}: category {c!r} is {kind} in {store.root}, but this source labels it "
                              f"{'per image' if c in src_image_level else 'per pixel'}; choose another category")
    return set(store.image_level_categories) | {c for c in vocab_src if c in src_image_level}


def _write_new_rows(store: BrodenStore, src, tasks: list, state: dict, origin: str, on_collision: str,
                    report: AddReport, run: tuple):
    """Stage the new images, unify their labels with the store's, write their rows under the work folder."""
    workers, quiet, strict = run

    def skip(image: str, reason: str) -> None:
        if strict:
            raise ExtendError(f"{origin}: {image}: {reason} (the store is unchanged; --skip-bad leaves such images out)")
        report.skipped.append((image, reason))

    per_image, kept = stage_images(tasks, state, workers, quiet, skip)
    if not kept:
        raise ExtendError(f"{origin}: no usable image")
    vocab = _unify_with_store(store, src, per_image, state["recipe"], origin, on_collision, report)
    write_images(kept, state, vocabulary_lookups(vocab, exclude=(STORE_SOURCE,)), workers, quiet, ExtendError)
    records = sorted(StoreWriter(state["root"]).records(), key=lambda r: (r.split_key, r.image))
    return vocab, records


def _new_tables(store: BrodenStore, src, recipe, vocab, records: list, origin: str, report: AddReport,
                image_level: set, quiet: bool) -> dict:
    """The store's new tables {file name: text}, statistics recounted from the label planes."""
    tally = tally_store(store, quiet)
    for r in records:
        tally.add_record(r)
    specs = _label_specs(store, vocab)
    native = _native_statistics(store, vocab) if "written_statistics" in store.build_info else None
    tables = compute_tables(specs, tally, native)
    categories = list(store.categories) + [c for c in tables["categories"] if c not in store.categories]
    for cat in sorted({c for r in records for c in r.cells}):
        if cat not in categories:
            categories.append(cat)
    report.new_categories = [c for c in categories if c not in store.categories]
    out = {
        "label.csv": _csv(("number", "name", "category", "frequency", "coverage", "syns"), tables["label_rows"]),
        "category.csv": _csv(("name", "first", "last", "count", "frequency"),
                             [r for c in categories for r in tables["category_rows"] if r[0] == c]),
    }
    for cat in categories:
        out[f"c_{cat}.csv"] = _csv(("code", "number", "name", "frequency", "coverage"),
                                   _stable_codes(store, cat, tables["map_rows"].get(cat, [])))
    out["index.csv"] = _extended_index(store.root / "index.csv", store.categories, categories, records)
    report.images = len(records)
    info = _updated_info(store, src, recipe, origin, report, categories, image_level)
    predicted = predicted_labels([src], vocab)
    if predicted:  # labels of the new source that a model predicted (build.json, as a build records them)
        info["predicted_labels"] = {**dict(info.get("predicted_labels") or {}), **predicted}
    if native is not None:
        info["written_statistics"] = written_statistics(tally)
    out["build.json"] = json.dumps(info, indent=2, sort_keys=True) + "\n"
    out["README.txt"] = _updated_readme(store.root, src, report, info)
    return out


def _unify_with_store(store: BrodenStore, src, per_image: dict, recipe, origin: str, on_collision: str, report: AddReport):
    """Unify the new source's labels with the existing ones held at their numbers; report joins and clashes."""
    new_labels = source_labels_from_stats([src], per_image, recipe.color)
    old = []
    for lab in store.labels:
        cat = store.primary_category(lab.number) or next(iter(lab.categories), "")
        old.append(SourceLabel(STORE_SOURCE, cat, lab.number, (lab.name,) + tuple(lab.syns), max(lab.frequency, 1), lab.coverage))
    reserved = {lab.name: lab.number for lab in store.labels}
    try:
        vocab = unify(old + new_labels, recipe.min_frequency, recipe.min_coverage, rule=recipe.unify, reserved=reserved)
        allow = recipe.allow_same_source_merges
        check_same_source(vocab, True if allow is True else tuple(allow) + (STORE_SOURCE,))
    except UnifyError as e:
        raise ExtendError(f"{origin}: {e}") from None
    by_number = {g.number: g for g in vocab.labels}
    for lab in store.labels:
        g = by_number.get(lab.number)
        if g is None or g.name != lab.name or not any(m.source == STORE_SOURCE and m.code == lab.number for m in g.members):
            raise ExtendError(f"{origin}: adding this source would change existing label {lab.number} ({lab.name!r}) "
                              f"of {store.root}; refusing (existing numbers never change)")
    if vocab.labels and max(g.number for g in vocab.labels) > 65535:
        raise ExtendError(f"{origin}: label numbers would exceed 65535, the most a segmentation PNG can hold")
    for g in vocab.labels:
        olds = [m for m in g.members if m.source == STORE_SOURCE]
        news = [m for m in g.members if m.source != STORE_SOURCE]
        if not olds:
            report.new_labels.append((g.number, g.name, g.primary_category()))
            continue
        old_cats = set(store.label_by_number[g.number].categories)
        for m in news:
            names = m.synonyms or m.names
            via = next((n for n in names if n == g.name or n in store.label_by_number[g.number].syns), names[0])
            report.joined.append((g.number, m.names[0], m.category, via))
            if m.category not in old_cats and m.source != COLOR_SOURCE:
                msg = (f"{origin}: {m.category} label {m.names[0]!r} (source code {m.code}) has the name {via!r} of existing "
                       f"label {g.number} ({g.name!r}, {', '.join(sorted(old_cats))}): it joins that label, following the "
                       f"synonym rules; if it means something else, rename it (rename: {{{m.names[0]}: NEW NAME}})")
                if on_collision == "error":
                    raise ExtendError(msg.replace("it joins that label, following the synonym rules; ", "refusing (on_collision: error); "))
                log.warning("%s", msg)
                report.collisions.append(msg)
    return vocab


def _native_statistics(store: BrodenStore, vocab) -> dict:
    """number -> category -> (images, coverage): the store's printed (native) statistics of its
    labels, plus the new source labels' native statistics (a store built with native tables)."""
    out: dict = {}
    for cat, entries in store.category_maps.items():
        for e in entries:
            out.setdefault(e.number, {})[cat] = (e.frequency, e.coverage)
    for g in vocab.labels:
        for m in g.members:
            if m.source == STORE_SOURCE:
                continue
            n, cov = out.setdefault(g.number, {}).get(m.category, (0, 0.0))
            out[g.number][m.category] = (n + m.frequency, cov + m.coverage)
    return out


def _label_specs(store: BrodenStore, vocab) -> list:
    specs = []
    for g in vocab.labels:
        old = store.label_by_number.get(g.number)
        if old is not None:
            syns = list(old.syns) + [n for n in g.syns if n not in old.syns and n != old.name]
            cat = store.primary_category(old.number) or next(iter(old.categories), "")
            specs.append(LabelSpec(g.number, old.name, tuple(syns), cat))
        else:
            specs.append(LabelSpec(g.number, g.name, tuple(g.syns), g.primary_category()))
    return specs


def _stable_codes(store: BrodenStore, cat: str, rows: list) -> list:
    """c_<cat>.csv rows with the existing labels' codes kept and new labels appended."""
    old = {e.number: e.code for e in store.category_maps.get(cat, [])}
    kept = sorted((r for r in rows if r[1] in old), key=lambda r: old[r[1]])
    new = [r for r in rows if r[1] not in old]
    out = [[old[r[1]]] + list(r[1:]) for r in kept]
    nxt = max(old.values(), default=0)
    for r in new:
        nxt += 1
        out.append([nxt] + list(r[1:]))
    return sorted(out, key=lambda r: r[0])


def _csv(header, rows) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, dialect="excel")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _extended_index(path: Path, old_cats: list, categories: list, records: list) -> str:
    """index.csv: the old bytes (lines padded with one empty cell per new column), then the new rows."""
    text = path.read_bytes().decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=False) if text else []
    extra = len(categories) - len(old_cats)
    body = lines[:]
    if extra:
        hdr = io.StringIO(newline="")
        csv.writer(hdr, dialect="excel", lineterminator="").writerow(list(INDEX_FIXED_COLUMNS) + categories)
        body = [hdr.getvalue()] + [ln + "," * extra if ln else ln for ln in lines[1:]]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, dialect="excel", lineterminator=newline)
    for r in records:
        w.writerow([r.image, r.split, r.ih, r.iw, r.sh, r.sw] + [join_cell(r.cells.get(c, [])) for c in categories])
    return newline.join(body) + newline + buf.getvalue()


def _updated_info(store: BrodenStore, src, recipe, origin: str, report: AddReport, categories: list, image_level: set) -> dict:
    info = dict(store.build_info)
    info.setdefault("format", "broden")
    info["categories"] = categories
    info["image_level_categories"] = sorted(c for c in categories if c in image_level)
    info.setdefault("sources", [])
    info["sources"] = list(info["sources"]) + [src.provenance()]
    info["additions"] = list(info.get("additions", [])) + [{
        "date": build_date(),
        "tool_version": __version__,
        "source_file": origin,
        "source": src.provenance(),
        "images": report.images,
        "skipped_images": len(report.skipped),
        "new_labels": [{"number": n, "name": nm, "category": c} for n, nm, c in report.new_labels],
        "joined_existing": [{"number": n, "name": nm, "category": c, "via": v} for n, nm, c, v in report.joined],
        "collisions": report.collisions,
        "new_categories": report.new_categories,
        "min_frequency": recipe.min_frequency,
        "min_coverage": recipe.min_coverage,
    }]
    return info


def _updated_readme(root: Path, src, report: AddReport, info: dict) -> str:
    p = root / "README.txt"
    text = p.read_text("utf-8") if p.exists() else ""
    lines = [f"Extended on {info['additions'][-1]['date']} by broden-dissect {__version__} with "
             f"{src.type_name} (images/{src.prefix}/): {count(report.images, 'image')}, {count(len(report.new_labels), 'new label')}"
             + (f", new categories {', '.join(report.new_categories)}" if report.new_categories else "") + "."]
    if src.license:
        lines.append(f"  licence/terms: {src.license}")
    if src.citation:
        lines.append(f"  cite: {src.citation}")
    return text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
