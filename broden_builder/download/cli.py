"""CLI pieces for downloads: build flags, ``broden download`` and ``broden checksums``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_download_arguments(p: argparse.ArgumentParser) -> None:
    """Add --download/--no-download, --mirror and --offline to a subcommand."""
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="fetch and extract missing downloadable sources first (default: yes)")
    p.add_argument("--mirror", default=None, metavar="URL",
                   help="fetch from MIRROR/host/path instead of each original URL (default: $BRODEN_MIRROR)")
    p.add_argument("--offline", action="store_true",
                   help="never use the network; say which file to put where")
    from .extract import ExtractLimits

    d = ExtractLimits()
    p.add_argument("--max-extract-gib", type=float, default=d.max_bytes / (1 << 30), metavar="GIB",
                   help=f"an archive without a registered checksum may expand to at most GIB (default {d.max_bytes >> 30})")
    p.add_argument("--max-extract-ratio", type=float, default=d.max_ratio, metavar="R",
                   help=f"... and to at most R times its size, above 16 MiB (default {d.max_ratio:g})")
    p.add_argument("--max-extract-members", type=int, default=d.max_members, metavar="N",
                   help=f"... with at most N members (default {d.max_members})")


def options_from_args(args):
    """DownloadOptions from parsed arguments (None when downloads are off)."""
    from .prepare import DownloadOptions

    if not getattr(args, "download", True) and not args.offline:
        return None
    from .extract import ExtractLimits

    d = ExtractLimits()
    limits = ExtractLimits(max_bytes=int(getattr(args, "max_extract_gib", d.max_bytes / (1 << 30)) * (1 << 30)),
                           max_ratio=getattr(args, "max_extract_ratio", d.max_ratio),
                           max_members=getattr(args, "max_extract_members", d.max_members))
    return DownloadOptions(enabled=True, mirror=args.mirror, offline=args.offline,
                           progress=not getattr(args, "quiet", False), extract_limits=limits)


def cmd_download(args) -> int:
    from ..build import BuildError, instantiate_sources
    from ..recipe import RecipeError, load_recipe
    from .prepare import prepare_sources
    from .source import DownloadableSource
    from .transfer import DownloadError

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
    opts = options_from_args(args)
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


def cmd_checksums(args) -> int:
    from ..sources import get_source_class
    from .prepare import register_checksums
    from .registry import ChecksumsFileError, format_row, load_checksums
    from .source import DownloadableSource
    from .extract import ArchiveError
    from .transfer import DownloadError

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


def add_download_commands(sub) -> None:
    """Register ``download`` and ``checksums`` on the ``broden`` subparsers."""
    d = sub.add_parser("download", help="fetch and extract the downloadable sources of a recipe")
    d.add_argument("recipe", help="recipe YAML")
    d.add_argument("--only", action="append", metavar="SOURCE", help="only this source type or prefix (repeatable)")
    d.add_argument("--force", action="store_true", help="fetch and extract even when the source looks present")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_download_arguments(d)
    d.set_defaults(func=cmd_download)

    c = sub.add_parser("checksums", help="show a source's checksums.tsv, or --register sizes and sha256")
    c.add_argument("source", nargs="?", help="source type to show")
    c.add_argument("--register", metavar="SOURCE", help="record size+sha256 of SOURCE's unregistered files")
    c.add_argument("--from", dest="from_", metavar="DIR_OR_URL",
                   help="take the files from this folder, or fetch them from this mirror URL")
    c.add_argument("--dest", metavar="DIR", help="keep the downloaded files here (default: a temporary folder)")
    c.add_argument("--force", action="store_true", help="re-register rows that already have checksums")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_checksums)
