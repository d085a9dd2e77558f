"""The ``segmenter`` source: a folder of images labelled by a segmentation model saved locally.

``source.py`` is the builder (recipe ``{type: segmenter, ...}``; its docstring lists the entry's keys),
``models.py`` loads the model (hf:FOLDER, torchvision:NAME:CHECKPOINT, file.py:function),
``labels.py`` turns its scores into the store's label planes; ``checksums.tsv`` what it downloads
(nothing), ``LICENSE.md`` the terms, ``CITATION.bib`` what to cite.
Its offline test with a planted oracle model is ``tests/sources/test_segmenter.py``.
"""
from .source import SegmenterSource  # noqa: F401  (registers the 'segmenter' type)

__all__ = ["SegmenterSource"]
