"""Settings of a process that ends with its command (the installed ``broden`` and ``dissect``).

Two measured costs of a short command that imports torch on a small machine, neither of which
a library call may change for its caller, so only the command-line entry points apply them
(broden_builder.cli_errors.run_command with ``own_process=True``):

- garbage collection over the ~10^6 long-lived objects of the imported libraries, during the run
  and in the interpreter's final collections: ``gc.freeze()`` before and after the command
  (measured: ``python -c "import torch"`` 2.05 s, with ``gc.freeze()`` at the end 1.54 s);
- the C allocator returning every large tensor's memory to the system and faulting it in again
  for the next batch: glibc's ``mallopt`` keeps up to 32 MiB blocks on the heap and trims it only
  above 1 GiB free (measured on ``dissect score``, 1,000 images x 512 x 7 x 7: system time 1.2-1.8 s
  -> 0.95-1.07 s). Forked DataLoader workers inherit it. Not glibc: nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 1 << 30


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach (module docstring).
    Objects still die by reference counting; only cycles among them are no longer collected."""
    gc.freeze()


def tune_allocator() -> bool:
    """Keep freed blocks below 32 MiB on glibc's heap, trimming it above 1 GiB free (module
    docstring). Returns whether glibc accepted both settings; False (nothing changed) elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
