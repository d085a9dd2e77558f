"""Exact, vectorised, mergeable statistics for Network Dissection.

TopQuantile (thresholds), TopKImages (top images per unit), Tally (I, G, A counts for the
three union rules), SegBatch (labels of a batch, from broden_builder.torch_dataset), scores() (IoU, best labels, detectors),
upsample() (activations to the segmentation size), UnitRange (each unit's min and max: constant units).
"""
from broden_builder.torch_dataset import SegBatch  # the labels a Tally counts against

from .quantile import TopQuantile
from .scores import scores
from .tally import UNIONS, BatchLabels, Tally, UnknownLabel, find_unknown_label
from .topk import TopKImages
from .unit_range import UnitRange
from .upsample import upsample

__all__ = ["TopQuantile", "TopKImages", "Tally", "BatchLabels", "UnknownLabel", "find_unknown_label", "SegBatch", "scores", "upsample", "UNIONS", "UnitRange"]
