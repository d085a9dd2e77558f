"""Exact, vectorised, mergeable statistics for Network Dissection.

TopQuantile (thresholds), TopKImages (top images per unit), Tally (I, G, A counts for the
three union rules), SegBatch (labels of a batch, from broden_builder.torch_dataset), scores() (IoU,
best labels, detectors),
upsample() (activations to the segmentation size), NullTally (the permutation null's counts) and
the p-values, q-values and significance built on it (dissect.stats.pvalues), UnitRange (each unit's
min and max: constant units).
"""

from broden_builder.torch_dataset import SegBatch  # the labels a Tally counts against

from .quantile import TopQuantile
from .scores import scores
from .tally import UNIONS, BatchLabels, Tally, UnknownLabel, find_unknown_label
from .null import NullTally, permutation, permutations
from .null_labels import LabelRuns, LabelRunsBuilder
from .null_masks import MaskIntervals, mask_intervals
from .pvalues import DETECTORS, is_detector, null_fields, significant_detectors
from .topk import TopKImages
from .unit_range import UnitRange
from .upsample import upsample

__all__ = [
    "TopQuantile",
    "TopKImages",
    "Tally",
    "BatchLabels",
    "UnknownLabel",
    "find_unknown_label",
    "SegBatch",
    "scores",
    "upsample",
    "UNIONS",
    "NullTally",
    "permutation",
    "permutations",
    "LabelRuns",
    "LabelRunsBuilder",
    "MaskIntervals",
    "mask_intervals",
    "DETECTORS",
    "is_detector",
    "null_fields",
    "significant_detectors",
    "UnitRange",
]
