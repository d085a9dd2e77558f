"""Compositional explanations of units (Mu & Andreas, NeurIPS 2020): logical formulas over
concepts found by beam search, from the same binarised unit masks the tally uses.

Layers: formula (Formula) <- counts (MaskCounts, AtomBuilder) <- search (beam_search) <-
layer (explain_activations: one pass over a store) <- output (explanations.csv).
"""

from .counts import AtomBuilder, MaskCounts, pixel_label_keys
from .formula import OPS, Formula
from .search import SearchResult, beam_search

__all__ = ["Formula", "OPS", "MaskCounts", "AtomBuilder", "pixel_label_keys", "beam_search", "SearchResult"]
