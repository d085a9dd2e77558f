"""ADE20K source package (Zhou et al.), releases 2016-07-26 (the one Broden used) and 2021-17-01.

``source.py`` is the builder (recipe ``{type: ade20k, path: DIR, version: "2016"}``), ``schema.py``
its recipe keys, ``index2016.py`` / ``release2021.py`` the readers of each release's index,
``encoding.py`` the class encoding of its PNGs, ``checksums.tsv`` what it downloads, ``LICENSE.md``
the terms, ``CITATION.bib`` what to cite. Its offline test is ``tests/sources/test_ade20k.py``.
"""
from .source import ADE20KSource  # noqa: F401  (registers the 'ade20k' type)

__all__ = ["ADE20KSource"]
