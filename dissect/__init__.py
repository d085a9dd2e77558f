"""Network Dissection: score every unit of a PyTorch layer against a Broden store.

``from dissect import Dissection`` (see dissect.api) is the Python entry point; the
``dissect`` command (dissect.cli) is the command-line one.
"""
__version__ = "0.1.0"

__all__ = ["Dissection", "DissectionResult", "__version__"]


def __getattr__(name):  # the API imports torch: load it only when asked for
    if name in ("Dissection", "DissectionResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'dissect' has no attribute {name!r}")
