"""The run: probe -> pass 1 (thresholds, top images) -> merge -> pass 2 (counts) -> score -> write.

- ``_runner``: the entry points ``dissect_model`` (pass 1 computes with the model) and
  ``score_activations`` (pass 1 reads activations);
- ``_passes``: ``Run`` (images, device, shard, work folder) and ``run_pass``, the loop of both passes;
  ``label_columns`` (which labels a layer is scored on);
- ``_tally_batches``: pass 2's per-batch count inside DataLoader workers;
- ``_checkpoint``, ``_cache``: resumable checkpoints of every statistic; the activation cache;
- ``_distributed``: rank/world, torchrun start-up, sharding, ``sync``;
- ``_resources``: CPU parallelism (torch threads, DataLoader workers of each pass);
- ``_model_input``: images -> Batch -> forward -> feature maps, shared by pass 1, explain and ablate;
- ``_basis``: a change of basis of the units; ``_activations``: activation arrays and files as input.
"""

from ._activations import open_activations
from ._basis import apply_basis, describe, load_basis, random_orthogonal
from ._distributed import dist_info, init_from_env
from ._model_input import (
    ModelForward,
    batch_loader,
    cache_rounded,
    image_batches,
    label_batches,
    loaded_model,
    plan_model,
)
from ._passes import label_columns, resolve_device
from ._resources import apply_threads, available_cpus, choose
from ._runner import dissect_model, score_activations
from ._tally_batches import Batch

__all__ = [
    "Batch",
    "ModelForward",
    "batch_loader",
    "cache_rounded",
    "image_batches",
    "label_batches",
    "loaded_model",
    "plan_model",
    "apply_basis",
    "apply_threads",
    "available_cpus",
    "choose",
    "describe",
    "dissect_model",
    "dist_info",
    "init_from_env",
    "label_columns",
    "load_basis",
    "open_activations",
    "random_orthogonal",
    "resolve_device",
    "score_activations",
]
