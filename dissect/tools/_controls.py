"""``dissect run --controls``: the paper's two baselines beside every dissection.

Bau et al., CVPR 2017: a detector count means something only next to (a) the same architecture
with random weights (section 4.2, "random" in Fig. 8) and (b) the trained layer in a randomly
rotated basis (section 3.2: a random orthogonal Q applied to all the layer's units before the
thresholds, each rotated unit thresholded at its own top quantile). The trained result goes to
``OUT/<layer>/`` as usual; the controls go beside it::

    OUT/controls/random/<layer>/     the same architecture, randomly initialised
    OUT/controls/rotated/<layer>/    the trained layer, units rotated by --rotate SEED
    OUT/controls/compare.html|csv    the three side by side (dissect.tools._compare)

Seed policy (``seed``, default 0): the rotation is ``random_orthogonal(U, seed)`` for each layer
(numpy default_rng(seed), dissect.engine random_orthogonal). Random init: a model loaded by name
(torchvision, timm, hf) is rebuilt with ``--weights none`` (its architecture's own initialiser,
torch seed 0, exactly what ``dissect run --weights none`` dissects); any other nn.Module is
copied and every submodule's ``reset_parameters()`` is called in module order after
``torch.manual_seed(seed)`` (PyTorch's default initialisers; BatchNorm running statistics reset).
The rotated control reads the trained run's activation cache: it costs a second pass 2, no forward.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from broden_builder.shared import note

from ..capture import LoadedModel, load_model, state_sha256
from ..config import DissectConfig
from ..engine import dissect_model
from ..errors import DissectError
from ..results import ResultsError, find_layer_folders, read_result_json, result_folders, safe_name
from ._compare import collect, is_random, run_name, side_by_side, write_compare

log = logging.getLogger(__name__)

CONTROLS = "controls"  # OUT/controls/{random,rotated}/
RANDOM, ROTATED = "random", "rotated"
#: LoadedModel kinds rebuilt by name with random weights (dissect.capture load_model(spec, "none"))
BY_NAME = ("torchvision", "timm", "hf")


@dataclass
class ControlRuns:
    """The three dissections: {layer: LayerResult} each, and where the comparison was written."""

    trained: dict
    random: dict
    rotated: dict
    compare: Optional[Path] = None
    table: str = ""


def control_dirs(out: Union[str, Path]) -> dict:
    """{"random": OUT/controls/random, "rotated": OUT/controls/rotated}."""
    return {k: Path(out) / CONTROLS / k for k in (RANDOM, ROTATED)}


def random_init(model: Union[nn.Module, LoadedModel], seed: int = 0) -> LoadedModel:
    """The same architecture with random weights (seed policy: module docstring); the trained model is
    untouched. Raises DissectError for a TorchScript or exported program (its initialisers are gone)."""
    lm: Optional[LoadedModel]
    if isinstance(model, LoadedModel):
        lm, module = model, model.module
    else:
        lm, module = None, model
    if lm is not None and lm.kind in BY_NAME:
        reloaded = load_model(lm.spec, "none")
        reloaded.preprocessing = lm.preprocessing  # the trained model's input: same size, mean and std
        return reloaded
    if isinstance(module, torch.jit.ScriptModule) or (lm is not None and lm.kind in ("torchscript", "export")):
        raise DissectError(
            "--controls: a TorchScript or exported model cannot be re-initialised; dissect its "
            "architecture as a Python module (file.py:function) to get the random-init control"
        )
    fresh = copy.deepcopy(module)
    torch.manual_seed(int(seed))
    reset = 0
    for m in fresh.modules():
        reset_parameters = getattr(m, "reset_parameters", None)
        if callable(reset_parameters):
            reset_parameters()
            reset += 1
    if not reset:
        raise DissectError(
            f"--controls: {type(module).__name__} has no submodule with reset_parameters(); "
            "cannot make its random-init control"
        )
    spec = lm.spec if lm is not None else type(module).__name__
    identity = {
        "kind": lm.kind if lm is not None else "module",
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "weights": f"none (random init: reset_parameters, torch seed {int(seed)})",
        "state_sha256": state_sha256(fresh),  # the weights themselves: cache and checkpoint keys, result.json
    }
    return LoadedModel(
        fresh.eval(), spec, identity["kind"], "none", identity, lm.preprocessing if lm is not None else None
    )


def _check(layers: Sequence[str], cfg: DissectConfig) -> None:
    if cfg.rotate is not None or cfg.basis is not None:
        raise DissectError("--controls makes its own rotated run: leave out --rotate/--basis")
    if any(safe_name(n) == CONTROLS for n in layers):
        raise DissectError(f"--controls writes OUT/{CONTROLS}/: a layer named {CONTROLS!r} would collide with it")


def _given(doc: dict) -> str:
    """The name of the model's own run beside its controls: "trained", or "as given" when result.json
    ``doc`` says its weights were random already (--weights none)."""
    return "as given" if is_random(doc) else "trained"


def dissect_with_controls(
    model: Union[nn.Module, LoadedModel],
    layers: Sequence[str],
    store,
    cfg: DissectConfig,
    out: Union[str, Path],
    seed: int = 0,
    charts: bool = True,
) -> ControlRuns:
    """Dissect ``layers`` of ``model`` into ``out`` and its two controls into ``out/controls/``; write
    ``out/controls/compare.html`` and ``compare.csv``. Returns the three results and the text table.
    Raises DissectError (bad settings, a model that cannot be re-initialised) as dissect_model does."""
    layers = list(layers)
    _check(layers, cfg)
    out = Path(out)
    dirs = control_dirs(out)
    own_cache = cfg.cache_dir is None and not cfg.keep_cache
    cache = out / ".controls_cache" if own_cache else Path(cfg.cache_dir or out / ".dissect_cache")
    shared = cfg.replace(cache_dir=str(cache))
    quiet = cfg.quiet
    try:
        note(f"controls 1/3: the model as given -> {out}", quiet)
        trained = dissect_model(model, layers, store, shared, out=out)
        note(f"controls 2/3: its layers rotated (seed {int(seed)}) -> {dirs[ROTATED]}", quiet)
        rotated = dissect_model(model, layers, store, shared.replace(rotate=int(seed)), out=dirs[ROTATED])
    finally:
        if own_cache:
            shutil.rmtree(cache, ignore_errors=True)
    note(f"controls 3/3: the same architecture with random weights (seed {int(seed)}) -> {dirs[RANDOM]}", quiet)
    random = dissect_model(random_init(model, seed), layers, store, cfg, out=dirs[RANDOM])
    runs = ControlRuns(trained, random, rotated)
    doc = next(iter(trained.values())).to_json()
    base = run_name(doc)
    if is_random(doc):
        log.warning("controls: the model already has random weights, so its random-init control repeats it")
    names = [f"{base} {_given(doc)}", f"{base} random init", f"{base} rotated (seed {int(seed)})"]
    outs = [out, dirs[RANDOM], dirs[ROTATED]]
    runs.table = side_by_side(_by_layer(collect(outs, names), layers))
    try:
        runs.compare = write_compare(
            outs, out / CONTROLS, title="Trained, random-init and rotated", charts=charts, names=names
        )
    except ImportError as e:  # jinja2 missing: the results and the table stand
        log.warning("controls: compare page not written (%s)", e)
    return runs


def _by_layer(summaries: list, layers: Sequence[str]) -> list:
    """Rows grouped by layer (trained, random, rotated of each layer together)."""
    order = {safe_name(n): i for i, n in enumerate(layers)}
    return sorted(summaries, key=lambda s: order.get(safe_name(s.layer), len(order)))


def _has_layers(folder: Path) -> bool:
    try:
        return folder.is_dir() and bool(find_layer_folders(folder))
    except ResultsError:
        return False


def expand_controls(outs: Sequence[Union[str, Path]]) -> tuple:
    """(folders, names): every results folder followed by its ``controls/random`` and ``controls/rotated``
    when it has them (names then say which is which; None = from result.json)."""
    folders: list = []
    names: list = []
    for out in outs:
        out = Path(out)
        dirs = control_dirs(out)
        found = [k for k in (RANDOM, ROTATED) if _has_layers(dirs[k])]
        folders.append(out)
        if not found:
            names.append(None)
            continue
        first = result_folders(out)
        doc = read_result_json(first[0]) if first else {}
        base = run_name(doc) if first else out.name
        names.append(f"{base} {_given(doc)}")
        for k in found:
            folders.append(dirs[k])
            names.append(f"{base} {'random init' if k == RANDOM else 'rotated'}")
    return folders, names


__all__ = ["ControlRuns", "dissect_with_controls", "random_init", "control_dirs", "expand_controls", "CONTROLS"]
