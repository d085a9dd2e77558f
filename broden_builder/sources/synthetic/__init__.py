"""The ``synthetic`` source: procedurally generated scenes with true labels in every category (tests and the demo).

``source.py`` is the builder (recipe ``{type: synthetic, ...}``; its docstring lists the entry's keys),
``checksums.tsv`` what it downloads (nothing), ``LICENSE.md`` the terms, ``CITATION.bib`` what to cite.
Its offline test with dummy data is ``tests/sources/test_synthetic.py``.
"""
from .source import SyntheticSource  # noqa: F401  (registers the 'synthetic' type)

__all__ = ["SyntheticSource"]
