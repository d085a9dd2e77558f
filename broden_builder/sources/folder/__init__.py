"""The ``folder`` source: a plain folder of your own images with mask PNGs or image-level labels.

``source.py`` is the builder (recipe ``{type: folder, ...}``; its docstring lists the entry's keys),
``checksums.tsv`` what it downloads (nothing), ``LICENSE.md`` the terms, ``CITATION.bib`` what to cite.
Its offline test with dummy data is ``tests/sources/test_folder.py``.
"""
from .source import FolderSource  # noqa: F401  (registers the 'folder' type)

__all__ = ["FolderSource"]
