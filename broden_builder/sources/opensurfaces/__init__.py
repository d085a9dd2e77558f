"""OpenSurfaces source package (Bell et al. 2013): materials, as Broden used them.

``source.py`` is the builder (recipe ``{type: opensurfaces, path: DIR}``), ``schema.py`` its recipe
keys, ``release.py`` the release's tables and the release script's label drawing, ``checksums.tsv``
what it downloads, ``LICENSE.md`` the terms, ``CITATION.bib`` what to cite. Its offline test is
``tests/sources/test_opensurfaces.py``.
"""
from .source import STATIC_ROOT, OpenSurfacesSource  # noqa: F401  (registers the 'opensurfaces' type)

__all__ = ["OpenSurfacesSource", "STATIC_ROOT"]
