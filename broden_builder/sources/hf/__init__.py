"""The ``hf`` source: a Hugging Face `datasets` dataset (hub id, save_to_disk folder or parquet files).

``source.py`` is the builder (recipe ``{type: hf, ...}``; its docstring lists the entry's keys),
``checksums.tsv`` what it downloads (nothing), ``LICENSE.md`` the terms, ``CITATION.bib`` what to cite.
Its offline test with dummy data is ``tests/sources/test_hf.py``.
"""
from .source import HFSource  # noqa: F401  (registers the 'hf' type)

__all__ = ["HFSource"]
