"""The base error of ``broden_builder`` and the errors of sources.

Every error the package raises for bad input or missing data is a :class:`BrodenError` (each also
keeps its builtin kind: a missing source is a FileNotFoundError, bad data a ValueError), so a caller
can catch the one base class. The CLI prints the message (which names the file, row or value).
"""
from __future__ import annotations


class InputError(Exception):
    """Bad input or environment, not a bug: what the commands report as one line ``error: ...``
    (broden_builder.cli_errors). The base of :class:`BrodenError` and of dissect's DissectError."""


class BrodenError(InputError):
    """Base of every error raised by broden_builder for bad input or missing data."""


class SourceMissingError(BrodenError, FileNotFoundError):
    """The source's files are not where the recipe says; the message says how to get them."""


class BadSourceItem(BrodenError, ValueError):
    """One image of a source cannot be used (corrupt file, bad label). Names the file; the build skips it."""


class SourceDataError(BrodenError, ValueError):
    """The source's annotations or configuration are wrong (a record points to a missing image,
    a polygon has fewer than 3 points, a mask value has no name). Names the file and the record;
    the build stops instead of skipping, since every image would be affected alike."""
