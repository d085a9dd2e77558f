"""Pascal source package: VOC 2010 images, Pascal-Context objects, Pascal-Part parts.

Files here: ``source.py`` (the builder, recipe ``{type: pascal, path: DIR}``),
``partnames.py`` (part2ind.m -> readable part names), ``matfiles.py`` (the .mat readers),
``checksums.tsv`` (download URLs and checksums), ``LICENSE.md`` (terms), ``CITATION.bib``.
"""
from .source import PascalSource  # noqa: F401  (registers the 'pascal' type)

__all__ = ["PascalSource"]
