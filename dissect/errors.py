"""The base error of the ``dissect`` package.

Every error the package raises for bad input (activations, layers, categories, model, results
folder, settings) is a :class:`DissectError`; the CLI prints its message (one line) and exits with status 1.
"""

from __future__ import annotations

from broden_builder.shared import InputError


class DissectError(InputError, ValueError):
    """Bad input to a dissection (activations, layers, categories, model); the message says which."""


class NotDissectedError(DissectError, KeyError):
    """A layer, unit or concept a result does not hold (also a KeyError, for ``result[layer]`` lookups)."""

    def __str__(self) -> str:  # KeyError quotes its argument; the message reads better as written
        return str(self.args[0]) if self.args else ""


class SettingError(DissectError, TypeError):
    """An unknown setting name (also a TypeError, as for an unknown keyword argument)."""


class UnitRangeError(DissectError, IndexError):
    """A unit number outside the layer (also an IndexError)."""


class NoResultsError(DissectError, FileNotFoundError):
    """A folder without dissection results (also a FileNotFoundError)."""
