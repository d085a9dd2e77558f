"""The base error of the ``dissect`` package.

Every error the package raises for bad input (activations, layers, categories, model, results
folder, settings) is a :class:`DissectError`; the CLI prints its message (one line) and exits with status 1.
"""
from __future__ import annotations

from broden_builder.errors import InputError


class DissectError(InputError, ValueError):
    """Bad input to a dissection (activations, layers, categories, model); the message says which."""
