"""DTD source package: ``source.py`` (the builder, recipe ``{type: dtd, path: DIR}``),
``checksums.tsv`` (download URL and checksum), ``LICENSE.md`` (terms), ``CITATION.bib``."""
from .source import DtdSource  # noqa: F401  (registers the 'dtd' type)

__all__ = ["DtdSource"]
