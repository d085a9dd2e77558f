"""The ``coco`` source: COCO-format annotations (instances, stuff or panoptic) of your own copy of COCO or a COCO-format dataset.

``source.py`` is the builder (recipe ``{type: coco, ...}``; its docstring lists the entry's keys),
``checksums.tsv`` what it downloads (nothing), ``LICENSE.md`` the terms, ``CITATION.bib`` what to cite.
Its offline test with dummy data is ``tests/sources/test_coco.py``.
"""
from .source import CocoSource  # noqa: F401  (registers the 'coco' type)

__all__ = ["CocoSource"]
