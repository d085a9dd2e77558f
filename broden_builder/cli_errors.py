"""The one top-level error handler of the ``broden`` and ``dissect`` commands.

Every failure reaches the user as one line ``error: PATH: message`` on stderr, never as a
traceback: the user reads what went wrong, not where in our code. Exit status: 0 success, 1 error, 2 usage (argparse's own
errors and :class:`UsageError`), 130 interrupted. A closed stdout (``broden find ... | head``)
ends the command quietly. An exception nobody anticipated is still reported in one line,
marked as a bug to report; ``--verbose`` (or ``BRODEN_TRACEBACK=1``) adds the traceback.

The library's own errors already name their file (StoreFormatError, RecipeError,
BuildError, ...); OSError is rendered from its ``filename`` and ``strerror``.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from .errors import BrodenError, InputError


class UsageError(BrodenError, ValueError):
    """The command line itself is wrong (exit status 2)."""


def _expected(e: BaseException) -> bool:
    """Bad input or environment, not a bug: an :class:`~broden_builder.errors.InputError` (the base of
    BrodenError and of dissect's DissectError), or Pillow's refusal of a decompression bomb (looked up
    only where Pillow is already loaded: it cannot have raised otherwise)."""
    if isinstance(e, InputError):
        return True
    pil = sys.modules.get("PIL.Image")
    bomb = getattr(pil, "DecompressionBombError", None)
    return bomb is not None and isinstance(e, bomb)


def describe(e: BaseException) -> str:
    """One line for an exception: ``PATH: message`` where the exception knows its path."""
    expected = _expected(e)
    if isinstance(e, OSError) and e.filename is not None and not expected:
        what = e.strerror or str(e)
        where = f"{e.filename}" + (f" -> {e.filename2}" if getattr(e, "filename2", None) else "")
        return f"{where}: {what}"
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, MemoryError):
        return "out of memory" + (f" ({e})" if str(e) else "")
    if expected or isinstance(e, (OSError, ValueError)):
        return str(e) or type(e).__name__
    return (f"unexpected {type(e).__name__}: {e} (this is a bug; please report it with the command line; "
            f"--verbose prints the traceback)")


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class Terminated(BaseException):
    """SIGTERM reached the command: raised in the main thread so that every ``finally`` runs (the
    lock releases and removes ``.lock.holder``, temporaries are removed); exit status 143."""


def _on_sigterm(main_pid: int):
    import signal

    def handler(signum, frame):
        if os.getpid() != main_pid:  # a forked worker inherited the handler: die as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    return handler


def run_command(fn: Callable[[], int], verbose: bool = False, own_process: bool = False) -> int:
    """Run ``fn`` and turn every exception into ``error: ...`` and an exit status (module docstring).
    ``own_process``: the process ends with the command (an installed command, ``python -m``), so
    it gets broden_builder.process's settings and SIGTERM unwinds it like Ctrl-C (a terminated
    command must release its locks: it leaves no ``.lock.holder``); never in a longer-lived process (tests, notebooks)."""
    if not own_process:
        return _run(fn, verbose)
    import signal

    from .process import freeze_heap, tune_allocator

    try:
        signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    except ValueError:  # not the main thread: leave the default
        pass
    tune_allocator()
    freeze_heap()
    try:
        return _run(fn, verbose)
    finally:
        freeze_heap()


def _run(fn: Callable[[], int], verbose: bool) -> int:
    try:
        return int(fn() or 0)
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the one place where every error becomes a message
        try:
            print(f"error: {describe(e)}", file=sys.stderr)
            if verbose or os.environ.get("BRODEN_TRACEBACK"):
                traceback.print_exc()
        except BrokenPipeError:
            pass
        return 1
