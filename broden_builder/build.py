"""Build a Broden store from a recipe.

Pass 1 (parallel, resumable): each source image is resolved at native resolution; its
label statistics are counted there; the image is squashed to the store size and written;
the label planes (still in source codes) are resized to the segmentation size and staged.
Unify: the native statistics of all sources decide the global vocabulary and numbering.
Pass 2 (parallel, resumable): staged planes are renumbered and written as PNGs.
Finally the CSV tables are written, index.csv last.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import __version__
from .color import color_codes, color_vocabulary
from .errors import BrodenError
from .progress import note
from .recipe import Recipe
from .resize import resize_image, resize_labels
from .sources.decode import decode_image
from .sources import BadSourceItem, ImageRecord, Source, SourceMissingError, UnknownSourceType, get_source_class
from .store.statistics import layer_fractions as native_fractions
from .store.atomic import atomic_write_bytes, atomic_write_text
from .store.paths import UnsafePathError, safe_category
from .store.writer import STAGING, LabelSpec, StoreWriter
from .unify import SourceLabel, UnifyError, Vocabulary, check_same_source, unify
from .words import count

log = logging.getLogger(__name__)

COLOR_SOURCE = "color"


class BuildError(BrodenError, RuntimeError):
    """The build cannot go on (missing sources, strict-mode failures)."""


@dataclass
class BuildReport:
    """What a build did: images written, skipped (with reasons), labels kept and dropped."""

    images: int = 0
    skipped: list = field(default_factory=list)  # (file or record, reason)
    missing_sources: list = field(default_factory=list)
    kept: dict = field(default_factory=dict)  # source -> category -> count
    dropped: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)  # category -> label count
    merges: list = field(default_factory=list)  # Vocabulary.merges() records
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{count(self.images, 'image')} written in {self.seconds:.1f} s"]
        if self.missing_sources:
            lines.append("missing sources (skipped): " + ", ".join(self.missing_sources))
        if self.skipped:
            lines.append(f"{len(self.skipped)} source images skipped:")
            lines += [f"  {where}: {why}" for where, why in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more")
        lines.append("labels per category: " + ", ".join(f"{c} {n}" for c, n in self.categories.items()))
        for src in sorted(set(self.kept) | set(self.dropped)):
            cats = sorted(set(self.kept.get(src, {})) | set(self.dropped.get(src, {})))
            parts = [f"{c} kept {self.kept.get(src, {}).get(c, 0)} dropped {self.dropped.get(src, {}).get(c, 0)}" for c in cats]
            lines.append(f"  {src}: " + "; ".join(parts))
        cross = [m for m in self.merges if m["cross_source"]]
        same = [m for m in self.merges if m["same_source"]]
        if cross:
            lines.append(f"{len(cross)} label(s) merge labels of different sources (also in build.json 'merges'):")
            for m in cross:
                members = " + ".join(f"{x['source']}/{x['category']}/{x['code']} {'; '.join(x['names'])!r}" for x in m["members"])
                lines.append(f"  {m['number']} {m['name']}: {members}")
        if same:
            lines.append(f"{len(same)} label(s) merge labels of one source and category (allowed by the recipe; "
                         f"listed in build.json 'merges')")
        return "\n".join(lines)


def instantiate_sources(recipe: Recipe, unavailable: Optional[list] = None) -> list:
    """Create the Source objects of a recipe (unknown types raise KeyError naming the known ones).

    With a list ``unavailable``, a source whose type cannot be loaded (unknown, or its module
    missing or failing to import) is left out and ``(type, reason)`` appended there instead.
    """
    out = []
    seen = set()
    for entry in recipe.sources:
        try:
            cls = get_source_class(entry["type"])
        except UnknownSourceType as e:
            # a typo in the recipe is an error even under --allow-missing: nothing is "missing"
            if unavailable is None:
                raise
            raise BuildError(f"{recipe.path or 'recipe'}: sources[{recipe.sources.index(entry)}]: {e}") from None
        except (KeyError, ImportError) as e:
            if unavailable is None:
                raise
            reason = e.args[0] if isinstance(e, KeyError) and e.args else f"{type(e).__name__}: {e}"
            unavailable.append((str(entry["type"]), f"cannot load source type {entry['type']!r}: {reason}"))
            continue
        src = cls(entry, image_size=recipe.size, segmentation_size=recipe.segmentation_size)
        if src.key in seen:
            raise BuildError(f"two sources share the prefix {src.key!r}; give one a distinct 'prefix'")
        seen.add(src.key)
        out.append(src)
    return out


# --------------------------------------------------------------------------- workers
_W: dict = {}


def _init_worker(state: dict) -> None:
    _W.clear()
    _W.update(state)


def _stage_path(root: Path, image: str) -> Path:
    return root / STAGING / "native" / (hashlib.sha1(image.encode("utf-8")).hexdigest() + ".npz")


def _image_name(src: Source, rec: ImageRecord) -> str:
    return f"{src.prefix}/{rec.basename}.jpg"


class StageUnreadable(Exception):
    """A staging file cannot be read (truncated by a crash or a power cut): its item is redone."""


def _load_stage(path: Path) -> dict:
    """Read a staging .npz; raises StageUnreadable (never BadZipFile & co.) when it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            planes = {k[2:]: z[k] for k in z.files if k.startswith("p_")}
        if not isinstance(meta, dict) or "stats" not in meta or "image_level" not in meta:
            raise ValueError("meta record incomplete")
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error ...
        raise StageUnreadable(f"{path}: {type(e).__name__}: {e}") from None
    meta["planes"] = planes
    return meta


def _check_layers(pixel: dict, own_resolution: frozenset, image_shape: tuple) -> None:
    """Every layer is 2-D, non-negative and the image's size (H, W); a category in ``own_resolution``
    (drawn at the source's own resolution) has layers the size of its first. Raises BadSourceItem."""
    h, w = image_shape
    for c, layers in pixel.items():
        own = c in own_resolution and layers and layers[0].ndim == 2
        want = tuple(layers[0].shape) if own else (h, w)
        for k, l in enumerate(layers):
            if l.shape != want:
                what = f"layer 1 is {want[1]}x{want[0]}" if own else f"the image is {w}x{h}"
                size = f"{l.shape[1]}x{l.shape[0]}" if l.ndim == 2 else f"shaped {l.shape}"
                raise BadSourceItem(f"{c} layer {k + 1} is {size}, {what}")
            if l.size and l.min() < 0:
                raise BadSourceItem(f"{c} layer {k + 1} holds negative label codes")


def _stage_one(task: tuple):
    """Pass 1 for one image. Returns (image, stats) or (image, None, reason) when skipped."""
    si, rec = task
    src: Source = _W["sources"][si]
    root: Path = _W["root"]
    image = _image_name(src, rec)
    stage = _stage_path(root, image)
    if stage.exists():
        try:
            meta = _load_stage(stage)
            return image, meta["stats"], None
        except StageUnreadable as e:  # a torn staging file (killed mid-write) is redone, never trusted
            log.warning("redoing %s: its staging file is unreadable (%s)", image, e)
            stage.unlink()
    try:
        res = src.resolve(rec)
        # plug-in sources may return any image the one decoder accepts (16-bit, float in [0, 1], grey, ...)
        rgb = decode_image(res.image, f"image returned by source {src.key!r}")
        h, w = rgb.shape[:2]
        pixel = {c: [np.asarray(l) for l in layers] for c, layers in res.pixel.items()}
        if _W["color"]:
            pixel["color"] = [color_codes(rgb)]
        _check_layers(pixel, res.own_resolution, (h, w))
    except BadSourceItem as e:
        return image, None, str(e)
    stats = {}
    for c, layers in pixel.items():
        fr = native_fractions(layers)
        if fr:
            stats[c] = {str(k): v for k, v in fr.items()}
    image_level = {c: sorted({int(x) for x in codes if int(x) > 0}) for c, codes in res.image_level.items()}
    for c, codes in image_level.items():
        if codes:
            stats[c] = {str(k): 1.0 for k in codes}
    writer = StoreWriter(root, jpeg_quality=_W["jpeg_quality"])
    writer.write_image(image, resize_image(rgb, _W["size"]))
    seg = _W["seg"]
    arrays = {}
    stacked = sorted(c for c in res.stacked if c in pixel)
    for c, layers in pixel.items():
        small = [resize_labels(l, seg) for l in layers]
        if c not in stacked:
            small = [l for l in small if l.any()]
        if small:
            arrays["p_" + c] = np.stack(small).astype(np.int32)
    meta = {"stats": stats, "image_level": image_level, "native_shape": [h, w], "stacked": stacked}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    atomic_write_bytes(stage, buf.getvalue())
    return image, stats, None


def _write_one(task: tuple):
    """Pass 2 for one image: renumber the staged planes and write the row."""
    si, rec = task
    src: Source = _W["sources"][si]
    root: Path = _W["root"]
    image = _image_name(src, rec)
    stage = _stage_path(root, image)
    writer = StoreWriter(root, image_level_categories=_W["image_level"], jpeg_quality=_W["jpeg_quality"])
    if writer.has_row(image):
        return image, True
    try:
        meta = _load_stage(stage)
    except (FileNotFoundError, StageUnreadable) as e:  # pass 1 left it readable: something else removed it
        return image, f"staging file {stage} vanished or was damaged during the build ({type(e).__name__})"
    lookups = _W["lookups"]
    pixel = {}
    for c, stack in meta["planes"].items():
        skey = COLOR_SOURCE if c == "color" else src.key
        table = lookups.get((skey, c))
        if table is None:
            continue
        # codes beyond the table (never counted, e.g. without a name in the vocabulary) are unlabeled
        known = stack < len(table)
        mapped = np.where(known, table[np.where(known, stack, 0)], 0)
        pixel[c] = [m for m in mapped]
    levels = {}
    for c, codes in meta["image_level"].items():
        table = lookups.get((src.key, c))
        if table is None:
            continue
        # a source label the frequency filter dropped is written as 0, as the original did (readers ignore it)
        levels[c] = [int(table[x]) if x < len(table) else 0 for x in codes]
    size, seg = _W["size"], _W["seg"]
    writer.write_row(image, _W["recipe"].split_of(image), (size, size), (seg, seg), pixel, levels,
                     stacked=meta.get("stacked", ()))
    return image, True


def _run(tasks: list, fn, state: dict, workers: int, desc: str, quiet: bool):
    from .progress import progress

    if workers <= 1:
        _init_worker(state)
        for t in progress(tasks, quiet, desc=desc, unit="img"):
            yield fn(t)
        return
    ctx = mp.get_context("spawn" if os.name == "nt" else "fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
        for r in progress(pool.imap(fn, tasks, chunksize=8), quiet, total=len(tasks), desc=desc, unit="img"):
            yield r


# --------------------------------------------------------------------------- build
def gather_records(sources: Sequence[Source]) -> list:
    """(source index, record) for every image, checking that store names are unique."""
    tasks, names = [], {}
    for si, src in enumerate(sources):
        for rec in src.records():
            name = _image_name(src, rec)
            if name in names:
                raise BuildError(f"two source images map to the same store name {name!r}")
            names[name] = si
            tasks.append((si, rec))
    return tasks


def source_labels_from_stats(sources: Sequence[Source], per_image: dict, with_color: bool) -> list:
    """Sum native per-image stats into SourceLabel entries (names from each source's vocabulary,
    split by the source's own convention, raw names kept for the plan and build.json)."""
    freq: dict = defaultdict(int)
    cov: dict = defaultdict(float)
    for image, (si, stats) in per_image.items():
        skey = sources[si].key
        for c, fr in stats.items():
            k0 = COLOR_SOURCE if c == "color" else skey
            for code, v in fr.items():
                freq[(k0, c, int(code))] += 1
                cov[(k0, c, int(code))] += v
    vocabs = {src.key: src.vocabulary() for src in sources}
    by_key = {src.key: src for src in sources}
    if with_color:
        vocabs[COLOR_SOURCE] = {"color": color_vocabulary()}
    out = []
    for (skey, c, code), n in sorted(freq.items()):
        names = vocabs.get(skey, {}).get(c, {}).get(code)
        if names is None:
            log.warning("%s: %s code %d has no name in the source vocabulary; dropped", skey, c, code)
            continue
        src = by_key.get(skey)
        if src is not None:
            split, raw = src.label_names(c, names)
        else:  # colour names: one name each
            split = raw = (names,) if isinstance(names, str) else tuple(names)
        out.append(SourceLabel(skey, c, code, split, n, cov[(skey, c, code)], raw=raw))
    return out


def native_statistics(vocab: Vocabulary) -> dict:
    """label number -> category -> (images, coverage) summed over its source labels at native resolution."""
    out: dict = {}
    for g in vocab.labels:
        cats = out.setdefault(g.number, {})
        for m in g.members:
            n, cov = cats.get(m.category, (0, 0.0))
            cats[m.category] = (n + m.frequency, cov + m.coverage)
    return out


def vocabulary_digest(vocab: Vocabulary) -> str:
    items = sorted((list(k), v) for k, v in vocab.mapping.items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def worker_state(sources: Sequence[Source], root: Path, recipe: Recipe, image_level) -> dict:
    """What the workers of :func:`stage_images` and :func:`write_images` need (sent once per process)."""
    return {"sources": list(sources), "root": root, "color": recipe.color, "size": recipe.size,
            "seg": recipe.segmentation_size, "jpeg_quality": recipe.jpeg_quality, "recipe": recipe,
            "image_level": frozenset(image_level)}


def stage_images(tasks: list, state: dict, workers: int, quiet: bool, on_skip) -> tuple:
    """Pass 1 over ``tasks`` (from :func:`gather_records`): resolve, write the store image, stage the planes.

    Returns ({image: (source index, native stats)}, kept tasks). ``on_skip(image, reason)`` is called
    for an unusable image (it may raise to stop). Resumable: a staged image is not redone.
    """
    prepare_sources(tasks, state, quiet)
    per_image, kept = {}, []
    for (image, stats, reason), task in zip(_run(tasks, _stage_one, state, workers, "resolve", quiet), tasks):
        if stats is None:
            on_skip(image, reason)
            continue
        per_image[image] = (task[0], stats)
        kept.append(task)
    return per_image, kept


def prepare_sources(tasks: list, state: dict, quiet: bool) -> None:
    """Let each source do its batched work (Source.prepare) over its records that pass 1 has still to stage."""
    root = state["root"]
    for si, src in enumerate(state["sources"]):
        todo = [rec for i, rec in tasks if i == si and not _stage_path(root, _image_name(src, rec)).exists()]
        if todo:
            src.prepare(todo, root / STAGING / "prepared" / src.key, quiet)


def predicted_labels(sources: Sequence[Source], vocab: Vocabulary) -> dict:
    """{label name: provenance} of the labels some source predicted rather than annotated
    (Source.label_provenance): per label its category, number, predicting source(s) and model,
    and the annotated sources it was merged with, if any."""
    by_key = {s.key: s.label_provenance() for s in sources}
    out: dict = {}
    for g in vocab.labels:
        pred = sorted({m.source for m in g.members if by_key.get(m.source)})
        if not pred:
            continue
        annotated = sorted({m.source for m in g.members if m.source not in pred})
        out[g.name] = {"number": g.number, "category": g.primary_category(), "predicted_by": pred,
                       "models": [dict(by_key[k], source=k) for k in pred], "also_annotated_by": annotated}
    return out


def vocabulary_lookups(vocab: Vocabulary, exclude: Sequence[str] = ()) -> dict:
    """{(source key, category): array code -> global number} for every source of ``vocab`` but ``exclude``."""
    maxcode: dict = defaultdict(int)
    for (s, c, code) in vocab.mapping:
        if s not in exclude:
            maxcode[(s, c)] = max(maxcode[(s, c)], code)
    return {(s, c): vocab.lookup(s, c, m) for (s, c), m in maxcode.items()}


def write_images(tasks: list, state: dict, lookups: dict, workers: int, quiet: bool, error: type) -> None:
    """Pass 2 over the kept ``tasks``: renumber the staged planes with ``lookups`` and write the rows.
    A staging file gone missing raises ``error`` (never a silently lost row)."""
    for image, ok in _run(tasks, _write_one, dict(state, lookups=lookups), workers, "write", quiet):
        if ok is not True:
            raise error(f"{image}: {ok}; rerun the command to redo it")


def available_sources(recipe: Recipe, sources: Optional[Sequence[Source]], download, allow_missing: bool,
                      report: BuildReport) -> list:
    """The recipe's sources that are present (after downloading missing ones when ``download`` is given);
    raises BuildError naming the missing ones unless ``allow_missing``."""
    unavailable: list = []
    sources = list(sources) if sources is not None else instantiate_sources(recipe, unavailable)
    if download is not None:
        from .acquire import prepare_sources

        prepare_sources(sources, download, allow_missing=allow_missing)
    present = []
    problems = [f"{t}: {why}" for t, why in unavailable]
    report.missing_sources.extend(t for t, _ in unavailable)
    for src in sources:
        try:
            src.check()
            present.append(src)
        except SourceMissingError as e:
            problems.append(f"{src.type_name} ({src.key}): {e}")
            report.missing_sources.append(src.key)
    if problems and not allow_missing:
        raise BuildError("missing sources:\n  " + "\n  ".join(problems) + "\n(use --allow-missing to build from the sources that are present)")
    for p in problems:
        log.warning("skipping missing source %s", p)
    if not sources and not unavailable:
        raise BuildError("the recipe lists no sources (sources: []); add at least one entry, e.g. "
                         "{type: synthetic, count: 100}")
    if not present:
        raise BuildError("every source of the recipe is missing, nothing to build from:\n  " + "\n  ".join(problems))
    return present


def build_store(
    recipe: Recipe,
    out: Path,
    workers: int = 1,
    allow_missing: bool = False,
    strict: bool = False,
    quiet: bool = False,
    sources: Optional[Sequence[Source]] = None,
    download=None,
    overwrite: bool = False,
) -> BuildReport:
    """Build (or resume building) the store described by ``recipe`` into ``out``.

    ``download`` (a broden_builder.acquire.DownloadOptions) fetches and extracts missing
    downloadable sources first (None: never download); download failures raise DownloadError.

    Reliability (README, "Reliability"): the build holds the exclusive lock of ``out``
    (LockedError when another process builds there); it writes into ``out/.build`` and
    replaces the old store only when it commits, all at once; a store built from another
    recipe is refused unless ``overwrite``; a killed build resumes (stale temporary files
    swept, unreadable staging files redone).
    """
    t0 = time.time()
    out = Path(out)
    report = BuildReport()
    sources = available_sources(recipe, sources, download, allow_missing, report)
    from .store.locking import exclusive

    try:
        with exclusive(out, "broden build"):
            _build_locked(recipe, out, sources, state_base={"workers": workers, "strict": strict, "quiet": quiet,
                                                           "overwrite": overwrite}, report=report)
    except SourceMissingError:
        raise
    except OSError as e:  # read-only folder, full disk, --out below a file ...
        raise BuildError(f"{e.filename or out}: cannot write the store ({e.strerror or e})") from None
    report.seconds = time.time() - t0
    return report


#: Top-level entries of a store that a new build replaces (the rest of --out is left alone).
STORE_ENTRIES = ("images", "index.csv", "label.csv", "category.csv", "README.txt", "build.json", ".cache")
WORK = ".build"


def _store_entries(out: Path) -> list:
    """The store files present at the top of ``out`` (what a committed build replaces or retires)."""
    found = [n for n in STORE_ENTRIES if (out / n).exists() or (out / n).is_symlink()]
    return found + sorted(p.name for p in out.glob("c_*.csv"))


def check_existing_store(out: Path, recipe: Recipe, overwrite: bool) -> None:
    """Refuse to replace a store built from another recipe (or not built by us) unless ``overwrite``.

    "Another recipe": build.json's recipe differs in a field that shapes the store
    (RESUME_FIELDS, or the name). Nothing is replaced here; a build replaces the old store
    only when it commits (store/commit.py).
    """
    present = [n for n in _store_entries(out) if n != ".cache"]
    if not present or overwrite:
        return
    info_path = out / "build.json"
    have = None
    if info_path.is_file():
        try:
            have = json.loads(info_path.read_text("utf-8")).get("recipe")
        except (OSError, ValueError, AttributeError):
            have = None
    if not isinstance(have, dict):
        raise BuildError(f"{out}: holds {', '.join(present)} but no build.json of a store built by this tool; "
                         f"refusing to replace it (use --overwrite, or another --out)")
    want = json.loads(json.dumps(recipe.to_dict(), sort_keys=True))
    diff = sorted(k for k in set(RESUME_FIELDS) | {"name"} if have.get(k) != want.get(k))
    if diff:
        raise BuildError(f"{out}: holds a store built from another recipe ({have.get('name')!r}; differs in "
                         f"{', '.join(diff)}); refusing to replace it (use --overwrite to replace it once the new "
                         f"build is complete, or another --out)")


def _build_locked(recipe: Recipe, out: Path, sources: list, state_base: dict, report: BuildReport) -> None:
    """The build proper, under the lock of ``out``: everything is written into ``out/.build``,
    then committed over the old store in one step (store/commit.py)."""
    from .store.atomic import sweep_temp_files
    from .store.commit import complete, sweep_trash

    workers, strict, quiet = state_base["workers"], state_base["strict"], state_base["quiet"]
    if complete(out) is not None:
        log.warning("%s: completed an interrupted commit", out)
    sweep_trash(out)
    check_existing_store(out, recipe, state_base["overwrite"])
    root = out / WORK
    if root.exists():
        n = sweep_temp_files(root)  # debris of writers killed between write and rename
        if n:
            log.info("%s: removed %d temporary file(s) of an interrupted build", root, n)
    if check_resume_key(root, recipe):
        staged = sum(1 for _ in (root / STAGING / "native").glob("*.npz"))
        note(f"resuming the partial build in {root} ({count(staged, 'image')} staged)", quiet=quiet)
    root.mkdir(parents=True, exist_ok=True)
    tasks = gather_records(sources)
    image_level = category_levels(sources)
    state = worker_state(sources, root, recipe, image_level)

    def skip(image: str, reason: str) -> None:
        if strict:
            raise BuildError(f"strict mode: {image}: {reason}")
        log.warning("skipped %s", f"{image}: {reason}")
        report.skipped.append((image, reason))

    per_image, kept_tasks = stage_images(tasks, state, workers, quiet, skip)
    if not kept_tasks and not recipe.allow_empty:
        # an empty store is almost always a mistake (wrong path, every image skipped): say so instead
        # of finishing a store that validates and dissects nothing
        why = f"; {len(report.skipped)} skipped, e.g. {report.skipped[0][0]}: {report.skipped[0][1]}" if report.skipped else ""
        raise BuildError(f"the build wrote 0 images ({len(tasks)} source records{why}); "
                         "set 'allow_empty: true' in the recipe if an empty store is wanted")
    try:
        vocab = unify(source_labels_from_stats(sources, per_image, recipe.color), recipe.min_frequency,
                      recipe.min_coverage, rule=recipe.unify)
        check_same_source(vocab, recipe.allow_same_source_merges)
    except UnifyError as e:
        raise BuildError(str(e)) from None
    report.merges = vocab.merges()
    digest, digest_path = vocabulary_digest(vocab), root / STAGING / "vocabulary.sha256"
    if digest_path.exists() and digest_path.read_text().strip() != digest:
        shutil.rmtree(root / STAGING / "rows", ignore_errors=True)  # rows numbered by another vocabulary
    atomic_write_text(digest_path, digest)
    write_images(kept_tasks, state, vocabulary_lookups(vocab), workers, quiet, BuildError)
    report.images = len(kept_tasks)
    _finish_store(root, recipe, sources, vocab, image_level, report)
    commit_build(out, root)


def _finish_store(root: Path, recipe: Recipe, sources: Sequence[Source], vocab: Vocabulary, image_level: set,
                  report: BuildReport) -> None:
    """Count what was kept and dropped, then write the CSV tables, build.json and README.txt (index.csv last)."""
    writer = StoreWriter(root, image_level_categories=image_level, jpeg_quality=recipe.jpeg_quality)
    specs = [LabelSpec(g.number, g.name, tuple(g.syns), g.primary_category()) for g in vocab.labels]
    for groups, counts in ((vocab.labels, report.kept), (vocab.dropped, report.dropped)):
        for g in groups:
            for m in g.members:
                counts.setdefault(m.source, {}).setdefault(m.category, 0)
                counts[m.source][m.category] += 1
    report.categories = vocab.category_counts()
    info = build_info(recipe, sources, report)
    predicted = predicted_labels(sources, vocab)
    if predicted:
        info["predicted_labels"] = predicted
    writer.finalize(specs, info, render_readme(recipe, sources, report, info), native=native_statistics(vocab))


def commit_build(out: Path, root: Path) -> None:
    """Replace the store in ``out`` by the finished one in ``root`` (= out/.build) in one commit."""
    from .store.commit import commit

    new = _store_entries(root)
    order = [n for n in new if n != "index.csv"] + (["index.csv"] if "index.csv" in new else [])
    retire = [n for n in _store_entries(out) if n not in new]
    commit(out, root, [(n, n) for n in order], retire, meta={"command": "broden build"})


def category_levels(sources: Sequence[Source]) -> set:
    """The image-level categories of a build; raises BuildError when two sources disagree on a category's level."""
    image_level: set = set()
    level_of: dict = {}
    for src in sources:
        declared = set(src.image_level_categories())
        image_level |= declared
        for cat in src.vocabulary():
            try:
                safe_category(cat, f"{src.key}: category")
            except UnsafePathError as e:
                raise BuildError(str(e)) from None
            level = "image-level" if cat in declared else "pixel"
            other = level_of.setdefault(cat, (level, src.key))
            if other[0] != level:
                raise BuildError(f"sources disagree on category {cat!r}: {other[1]} labels it {other[0]}, "
                                 f"{src.key} {level}; give one of them another category name")
    return image_level


#: Recipe fields that shape the staged images and planes: a partial build made with other values is not resumed.
RESUME_FIELDS = ("size", "segmentation_size", "color", "jpeg_quality", "splits", "sources")


def check_resume_key(out: Path, recipe: Recipe) -> bool:
    """Record the fields a partial build depends on; refuse to resume one made with other values.
    Returns True when a partial build made with the same values is there (it is resumed)."""
    path = out / STAGING / "build_key.json"
    want = {k: v for k, v in recipe.to_dict().items() if k in RESUME_FIELDS}
    want = json.loads(json.dumps(want, sort_keys=True))
    if path.is_file():
        have = json.loads(path.read_text("utf-8"))
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if diff:
            raise BuildError(f"{out} holds a partial build made with a different {', '.join(diff)}; "
                             f"resume it with the same recipe, or delete {out} (or use another --out) to start over")
        return True
    atomic_write_text(path, json.dumps(want, indent=1, sort_keys=True))
    return False


def build_date() -> str:
    """UTC build date; SOURCE_DATE_EPOCH (reproducible builds) overrides the clock."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    ts = time.gmtime(int(epoch)) if epoch else time.gmtime()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", ts)


def build_info(recipe: Recipe, sources: Sequence[Source], report: BuildReport) -> dict:
    import platform

    return {
        "format": "broden",
        "tool": "broden-dissect",
        "tool_version": __version__,
        "date": build_date(),
        "recipe": recipe.to_dict(),
        "recipe_path": recipe.path,
        "sources": [s.provenance() for s in sources],
        "missing_sources": report.missing_sources,
        "skipped_images": len(report.skipped),
        "image_size": recipe.size,
        "segmentation_size": recipe.segmentation_size,
        "numbering": "by native-resolution frequency, then coverage (the statistics label.csv prints)",
        "unify": recipe.unify,
        "merges": report.merges,
        "versions": {"python": platform.python_version(), "numpy": np.__version__},
    }


def render_readme(recipe: Recipe, sources: Sequence[Source], report: BuildReport, info: dict) -> str:
    lines = [
        f"Broden-format store '{recipe.name}', built by broden-dissect {__version__} on {info['date']}.",
        f"Images {recipe.size}x{recipe.size}, segmentations {recipe.segmentation_size}x{recipe.segmentation_size}.",
        f"Labels kept when in >= {recipe.min_frequency} images and covering >= {recipe.min_coverage} images.",
        f"Colour labels: {'yes' if recipe.color else 'no'}. Splits: {dict(recipe.splits)}.",
        f"{count(report.images, 'image')}; labels per category: " + ", ".join(f"{c} {n}" for c, n in report.categories.items()),
        "",
        "Sources:",
    ]
    for s in sources:
        lines.append(f"- {s.type_name} (images/{s.prefix}/)")
        if s.license:
            lines.append(f"  licence/terms: {s.license}")
        if s.citation:
            lines.append(f"  cite: {s.citation}")
    if recipe.color:
        lines.append("- colour names: van de Weijer et al., Learning Color Names for Real-World Applications, IEEE TIP 2009")
    lines.append("")
    lines.append("Machine-readable provenance: build.json.")
    return "\n".join(lines) + "\n"
