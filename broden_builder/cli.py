"""The ``broden`` command: build, download, validate, extend and inspect Broden stores."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .words import count


def _cmd_build(args) -> int:
    from .build import build_store
    from .cli_errors import UsageError
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.plan:
        from .plan import plan_recipe

        plan = plan_recipe(recipe)
        print(json.dumps(plan.to_json(), indent=2) if args.json else plan.summary())
        return 0
    if not args.out:
        raise UsageError("--out is required (unless --plan)")
    report = build_store(recipe, Path(args.out), workers=args.workers, allow_missing=args.allow_missing,
                         strict=args.strict, quiet=args.quiet, download=download_options(args),
                         overwrite=args.overwrite)
    print(report.summary())
    print(f"store written to {args.out}")
    return 0


def _cmd_validate(args) -> int:
    from .store.validate import validate_store

    problems = validate_store(args.store, check_images=not args.fast, progress=not args.quiet)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(p)
    if errors:
        print(f"{args.store}: INVALID ({len(errors)} error(s), {len(problems) - len(errors)} warning(s))")
        return 1
    print(f"{args.store}: valid ({len(problems)} warning(s))")
    return 0


def _cmd_stats(args) -> int:
    from .store.validate import store_stats

    stats = store_stats(args.store)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    splits = ", ".join(f"{k} {v}" for k, v in sorted(stats["splits"].items()))
    print(f"{args.store}: {count(stats['images'], 'image')} ({splits})")
    print(f"{'category':<12}{'level':<7}{'labels':>7}  images per split")
    for cat, c in stats["categories"].items():
        per = ", ".join(f"{k} {v}" for k, v in sorted(c["images"].items()))
        print(f"{cat:<12}{c['level']:<7}{c['labels']:>7}  {per}")
    for model, cats in stats.get("predicted", {}).items():
        n = sum(cats.values())
        print(f"labels predicted by {model}: {n} ({', '.join(f'{c} {k}' for c, k in sorted(cats.items()))}); "
              f"predicted by a segmentation model, not annotated (build.json: predicted_labels)")
    return 0


def _cmd_add(args) -> int:
    from .cli_errors import describe
    from .extend import add_source, load_source_entry
    from .store.commit import pending_commit
    from .store.locking import LockedError

    try:
        entry = load_source_entry(args.source)
        report = add_source(args.store, entry, origin=args.source, workers=args.workers, quiet=args.quiet,
                            strict=not args.skip_bad, on_collision=args.on_collision)
    except Exception as e:
        print(f"error: {describe(e)}", file=sys.stderr)
        if not isinstance(e, LockedError) and pending_commit(args.store) is None:
            print(f"{args.store}: unchanged", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _cmd_recover(args) -> int:
    from .extend import recover
    from .store.errors import StoreFormatError
    from .store.locking import exclusive

    from .store.commit import is_store_folder

    if not Path(args.store).is_dir():
        raise StoreFormatError(args.store, "store directory does not exist")
    if not is_store_folder(args.store):  # take no lock (write nothing) in a folder that is not a store
        raise StoreFormatError(args.store, "not a Broden store (no index.csv, label.csv or interrupted "
                                           "build/add); nothing was written there")
    with exclusive(args.store, "broden recover"):
        done = recover(args.store)
    print(f"{args.store}: " + ("completed the interrupted commit" if done else "no interrupted commit; nothing to do"))
    return 0


def _cmd_find(args) -> int:
    from .store.reader import BrodenStore

    store = BrodenStore(args.store)
    lab = store.label(args.concept)
    hits = store.images_with_label(lab.number, split=args.split, progress=not args.quiet)
    print(f"# {lab.name} (label {lab.number}, {', '.join(lab.categories)}): {len(hits)} image(s)")
    for i in hits[: args.limit] if args.limit else hits:
        print(store.rows[i].image)
    return 0


def _cmd_export(args) -> int:
    from .store.locking import exclusive
    from .store.reader import BrodenStore
    from .store.shards import export_webdataset

    from .progress import progress

    store = BrodenStore(args.store)
    out = Path(args.webdataset)
    shards = -(-len(store.rows) // max(1, args.shard_size))
    with exclusive(out, "broden export"):
        bar = progress(total=shards, desc="export", unit="shard", quiet=args.quiet)
        doc = export_webdataset(store, out, args.shard_size, progress=lambda done: bar.update(done - bar.n))
        bar.close()
    n = len(doc["shards"])
    print(f"{doc['rows']} rows in {n} shard{'s' if n != 1 else ''}: "
          f"{out}/shard-{{000000..{n - 1:06d}}}.tar (checksums in {out}/shards.json)")
    return 0


def _add_export_command(sub) -> None:
    e = sub.add_parser("export", help="write the store as WebDataset tar shards (dissect reads them with --store 'DIR/shard-{000000..000009}.tar')")
    e.add_argument("store")
    e.add_argument("--webdataset", required=True, metavar="DIR", help="a new (or empty) folder for the shards and tables")
    e.add_argument("--shard-size", type=int, default=1000, metavar="N", help="rows per shard (default 1000)")
    e.set_defaults(func=_cmd_export)


def _add_download_arguments(p: argparse.ArgumentParser) -> None:
    """Add --download/--no-download, --mirror and --offline to a subcommand."""
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="fetch and extract missing downloadable sources first (default: yes)")
    p.add_argument("--mirror", default=None, metavar="URL",
                   help="fetch from MIRROR/host/path instead of each original URL (default: $BRODEN_MIRROR)")
    p.add_argument("--offline", action="store_true",
                   help="never use the network; say which file to put where")
    from .download.extract import ExtractLimits

    d = ExtractLimits()
    p.add_argument("--max-extract-gib", type=float, default=d.max_bytes / (1 << 30), metavar="GIB",
                   help=f"an archive without a registered checksum may expand to at most GIB (default {d.max_bytes >> 30})")
    p.add_argument("--max-extract-ratio", type=float, default=d.max_ratio, metavar="R",
                   help=f"... and to at most R times its size, above 16 MiB (default {d.max_ratio:g})")
    p.add_argument("--max-extract-members", type=int, default=d.max_members, metavar="N",
                   help=f"... with at most N members (default {d.max_members})")


def download_options(args):
    """DownloadOptions from parsed arguments (None when downloads are off)."""
    from .acquire import DownloadOptions

    if not getattr(args, "download", True) and not args.offline:
        return None
    from .download.extract import ExtractLimits

    d = ExtractLimits()
    limits = ExtractLimits(max_bytes=int(getattr(args, "max_extract_gib", d.max_bytes / (1 << 30)) * (1 << 30)),
                           max_ratio=getattr(args, "max_extract_ratio", d.max_ratio),
                           max_members=getattr(args, "max_extract_members", d.max_members))
    return DownloadOptions(enabled=True, mirror=args.mirror, offline=args.offline,
                           progress=not getattr(args, "quiet", False), extract_limits=limits)


def _cmd_download(args) -> int:
    from .acquire import prepare_sources
    from .build import BuildError, instantiate_sources
    from .download.transfer import DownloadError
    from .recipe import RecipeError, load_recipe
    from .sources.downloadable import DownloadableSource

    try:
        recipe = load_recipe(args.recipe)
        sources = instantiate_sources(recipe)
    except (RecipeError, BuildError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.only:
        wanted = set(args.only)
        sources = [s for s in sources if s.type_name in wanted or s.key in wanted]
        unknown = wanted - {s.type_name for s in sources} - {s.key for s in sources}
        if unknown:
            print(f"error: --only {', '.join(sorted(unknown))}: not a source of {args.recipe}", file=sys.stderr)
            return 2
    opts = download_options(args)
    try:
        status = prepare_sources(sources, opts, force=args.force) if opts is not None else {}
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for s in sources:
        if not isinstance(s, DownloadableSource):
            print(f"{s.key}: nothing to download ({s.type_name} is not downloadable)")
        else:
            print(f"{s.key}: {status.get(s.key, 'skipped')}")
    return 0


def _cmd_checksums(args) -> int:
    from .acquire import register_checksums
    from .download.extract import ArchiveError
    from .download.registry import ChecksumsFileError, format_row, load_checksums
    from .download.transfer import DownloadError
    from .sources import get_source_class
    from .sources.downloadable import DownloadableSource

    name = args.register or args.source
    if not name:
        print("error: give a SOURCE, or --register SOURCE", file=sys.stderr)
        return 2
    try:
        cls = get_source_class(name)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    if not (isinstance(cls, type) and issubclass(cls, DownloadableSource)):
        print(f"error: source {name!r} declares no downloadable files", file=sys.stderr)
        return 2
    try:
        if args.register:
            written = register_checksums(name, args.from_, Path(args.dest) if args.dest else None,
                                         force=args.force, progress=not args.quiet)
            for r in written:
                print(f"registered {r.filename}: {r.size} bytes, sha256 {r.sha256}")
            print(f"{cls.checksums_path()}: {len(written)} row(s) registered")
            return 0
        print(f"# {cls.checksums_path()}")
        for r in load_checksums(cls.checksums_path()):
            print(format_row(r) + ("" if r.verified else "\t# size/sha256 incomplete"))
        return 0
    except (DownloadError, ChecksumsFileError, ArchiveError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _add_download_commands(sub) -> None:
    """Register ``download`` and ``checksums`` on the ``broden`` subparsers."""
    d = sub.add_parser("download", help="fetch and extract the downloadable sources of a recipe")
    d.add_argument("recipe", help="recipe YAML")
    d.add_argument("--only", action="append", metavar="SOURCE", help="only this source type or prefix (repeatable)")
    d.add_argument("--force", action="store_true", help="fetch and extract even when the source looks present")
    _add_download_arguments(d)
    d.set_defaults(func=_cmd_download)

    c = sub.add_parser("checksums", help="show a source's checksums.tsv, or --register sizes and sha256")
    c.add_argument("source", nargs="?", help="source type to show")
    c.add_argument("--register", metavar="SOURCE", help="record size+sha256 of SOURCE's unregistered files")
    c.add_argument("--from", dest="from_", metavar="DIR_OR_URL",
                   help="take the files from this folder, or fetch them from this mirror URL")
    c.add_argument("--dest", metavar="DIR", help="keep the downloaded files here (default: a temporary folder)")
    c.add_argument("--force", action="store_true", help="re-register rows that already have checksums")
    c.set_defaults(func=_cmd_checksums)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="broden", description="Build, validate and inspect Broden-format concept datasets.")
    p.add_argument("--version", action="version", version=f"broden-dissect {__version__}")
    from .progress import add_verbosity_flags

    add_verbosity_flags(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build a store from a recipe (resumes an interrupted build)")
    b.add_argument("recipe", help="recipe YAML")
    b.add_argument("--out", help="store directory (required unless --plan)")
    b.add_argument("--plan", action="store_true", help="report the vocabulary a build would produce, from metadata alone")
    b.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    b.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    b.add_argument("--allow-missing", action="store_true", help="build from the sources that are present")
    b.add_argument("--strict", action="store_true", help="fail on the first unusable source image instead of skipping it")
    b.add_argument("--overwrite", action="store_true",
                   help="replace a store built from another recipe in --out (only once the new build is complete)")
    _add_download_arguments(b)
    b.set_defaults(func=_cmd_build)
    _add_download_commands(sub)

    v = sub.add_parser("validate", help="check every file of a store; exit 1 when invalid")
    v.add_argument("store")
    v.add_argument("--fast", action="store_true", help="do not decode the JPEG images")
    v.set_defaults(func=_cmd_validate)

    s = sub.add_parser("stats", help="counts per category and split")
    s.add_argument("store")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_stats)

    a = sub.add_parser("add", help="extend a store with one more source (existing labels and rows are kept)")
    a.add_argument("store", help="store directory (a finished store)")
    a.add_argument("--source", required=True, help="YAML file holding one source entry, written as in a recipe")
    a.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    a.add_argument("--skip-bad", action="store_true", help="leave unusable images out instead of refusing")
    a.add_argument("--on-collision", choices=("merge", "error"), default=None,
                   help="a new label named like an existing label of another category: merge (default, reported) or refuse")
    a.set_defaults(func=_cmd_add)

    f = sub.add_parser("find", help="which images contain a concept (name, synonym or number)")
    f.add_argument("store")
    f.add_argument("concept")
    f.add_argument("--split", default=None)
    f.add_argument("--limit", type=int, default=0)
    f.set_defaults(func=_cmd_find)

    _add_export_command(sub)
    r = sub.add_parser("recover", help="complete a store change (build or add) that was interrupted while committing")
    r.add_argument("store")
    r.set_defaults(func=_cmd_recover)

    from .progress import add_verbosity_to_subcommands

    add_verbosity_to_subcommands(sub)
    return p


def console() -> int:
    """The installed ``broden`` command (and ``python -m broden_builder.cli``): :func:`main` in a
    process that ends with the command (broden_builder.process settings)."""
    return main(own_process=True)


def main(argv: Optional[Sequence[str]] = None, own_process: bool = False) -> int:
    """Run the ``broden`` command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    from .cli_errors import run_command

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: args.func(args), verbose=args.verbose, own_process=own_process)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console())
