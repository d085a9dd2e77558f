"""The base error of the ``dissect`` package.

Every error the package raises for bad input (activations, layers, categories, model, results
folder, settings) is a :class:`DissectError`; the CLI prints its message and exits with status 2.
"""
from __future__ import annotations


class DissectError(ValueError):
    """Bad input to a dissection (activations, layers, categories, model); the message says which."""
