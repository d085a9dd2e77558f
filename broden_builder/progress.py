"""Progress bars for both commands: ``tqdm.auto`` that stays quiet when nobody is watching.

``progress(..., quiet=False)`` passes ``disable=None`` to tqdm, which hides the bar when the
output is not a terminal (redirected logs get no carriage-return noise), and honours
``TQDM_DISABLE=1`` (tqdm reads that variable only as a default, which an explicit ``disable``
would override, so it is checked here). ``quiet=True`` (``-q``) always hides it.
"""
from __future__ import annotations

import os


def env_disabled() -> bool:
    """True when the environment asks for no progress bars (``TQDM_DISABLE`` set and not 0/false)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress(iterable=None, quiet: bool = False, **kw):
    """A ``tqdm.auto.tqdm`` over ``iterable`` (or a manual bar with ``total=``); see the module doc."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=True if quiet or env_disabled() else None, **kw)


def add_verbosity_flags(parser, top: bool = False) -> None:
    """``-q/--quiet`` (no progress bars) and ``-v/--verbose`` (INFO logging) on a CLI parser.

    Both commands put them on the top parser (``dissect -q run ...``) and on every subcommand
    (``dissect run ... -q``); the subcommands' copies default to "not given" (argparse.SUPPRESS)
    so they never undo a flag given before the subcommand.
    """
    import argparse

    default = False if top else argparse.SUPPRESS
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log more (INFO messages)")


def add_verbosity_to_subcommands(subparsers) -> None:
    """:func:`add_verbosity_flags` on every subcommand parser of an ``add_subparsers()`` object."""
    for sub in set(subparsers.choices.values()):
        add_verbosity_flags(sub)
