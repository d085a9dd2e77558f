"""The ``broden`` command: build, validate and inspect Broden stores."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__


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
    from .download.cli import options_from_args

    report = build_store(recipe, Path(args.out), workers=args.workers, allow_missing=args.allow_missing,
                         strict=args.strict, quiet=args.quiet, download=options_from_args(args),
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
    print(f"{args.store}: {stats['images']} images ({splits})")
    print(f"{'category':<12}{'level':<7}{'labels':>7}  images per split")
    for cat, c in stats["categories"].items():
        per = ", ".join(f"{k} {v}" for k, v in sorted(c["images"].items()))
        print(f"{cat:<12}{c['level']:<7}{c['labels']:>7}  {per}")
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

    if not Path(args.store).is_dir():
        raise StoreFormatError(args.store, "store directory does not exist")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="broden", description="Build, validate and inspect Broden-format concept datasets.")
    p.add_argument("--version", action="version", version=f"broden-dissect {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
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
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    from .download.cli import add_download_arguments, add_download_commands

    add_download_arguments(b)
    b.set_defaults(func=_cmd_build)
    add_download_commands(sub)

    v = sub.add_parser("validate", help="check every file of a store; exit 1 when invalid")
    v.add_argument("store")
    v.add_argument("--fast", action="store_true", help="do not decode the JPEG images")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
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
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=_cmd_add)

    f = sub.add_parser("find", help="which images contain a concept (name, synonym or number)")
    f.add_argument("store")
    f.add_argument("concept")
    f.add_argument("--split", default=None)
    f.add_argument("--limit", type=int, default=0)
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar (the first query scans the store once)")
    f.set_defaults(func=_cmd_find)

    r = sub.add_parser("recover", help="complete a store change (build or add) that was interrupted while committing")
    r.add_argument("store")
    r.set_defaults(func=_cmd_recover)

    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli_errors import run_command

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: args.func(args), verbose=args.verbose)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
