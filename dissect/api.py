"""The Python API: dissect layers of any ``nn.Module`` on a Broden store.

Example::

    import torchvision
    from dissect import Dissection

    model = torchvision.models.resnet18(weights="IMAGENET1K_V1")
    result = Dissection(model, ["layer3", "layer4"], "broden1_224", batch_size=64).run(out="out")
    rows = result.table()              # one dict per unit and layer (pandas: pd.DataFrame(rows))
    result.iou("layer4")               # float32 [units, labels]; columns: result.labels("layer4")
    result.thresholds("layer4")        # float32 [units]: each unit's activation threshold T_k
    result.detectors("layer4")[:5]     # the best detector units, as table rows
    result.report()                    # out/index.html and out/<layer>/report.html

Settings are the fields of :class:`dissect.DissectConfig` (``quantile``, ``iou_threshold``,
``union``, ``categories``, ``top_k``, ``split``, ``input_size``, ``mean``, ``std``, ``upsample``,
``batch_size``, ``workers``, ``device``, ...), passed as keywords.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import numpy as np

from .errors import DissectError, NoResultsError, NotDissectedError, SettingError

if TYPE_CHECKING:
    from .tools import ControlRuns


def _config(config, settings: dict):
    from .config import DissectConfig

    known = {f.name for f in fields(DissectConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SettingError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
    base = config if config is not None else DissectConfig()
    return base.replace(**settings) if settings else base


def _is_rank0() -> bool:
    try:
        import torch.distributed as dist

        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except Exception:  # pragma: no cover
        return True


class DissectionResult:
    """The results of one dissection: ``{layer: LayerResult}`` plus table/array accessors.

    Every accessor takes the layer name; it may be left out when there is only one layer.
    """

    def __init__(self, layers: dict, out: Optional[Union[str, Path]] = None, store=None):
        self.layers = dict(layers)
        self.out = Path(out) if out is not None else None
        self.store = store
        self.controls: Optional[ControlRuns] = None  # a dissect.tools.ControlRuns after Dissection.run(controls=True)

    # -------------------------------------------------------------- mapping
    def __getitem__(self, layer: str):
        return self.layers[self._name(layer)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"DissectionResult({', '.join(r.summary_line() for r in self.layers.values())})"

    def _name(self, layer: Optional[str]) -> str:
        if layer is None:
            if len(self.layers) != 1:
                raise DissectError(f"several layers were dissected {list(self.layers)}: name one")
            return next(iter(self.layers))
        if layer not in self.layers:
            raise NotDissectedError(f"layer {layer!r} was not dissected; layers: {list(self.layers)}")
        return layer

    # -------------------------------------------------------------- tables and arrays
    def table(self, layer: Optional[str] = None, compact: bool = False) -> list:
        """Per-unit records (unit_index order; all layers when ``layer`` is None and several exist).

        Keys: ``layer, unit`` (1-based), ``unit_index`` (0-based), ``label, number, category, iou,
        detector, threshold``, then for every category ``<cat>-label, <cat>-iou, <cat>-truth,
        <cat>-activation, <cat>-intersect`` (the tally.csv columns). ``compact=True``: only
        ``layer, unit, label, category, iou``. ``pandas.DataFrame(rows)`` works.
        """
        names = list(self.layers) if layer is None and len(self.layers) > 1 else [self._name(layer)]
        keys = (
            ("unit", "label", "category", "iou")
            if compact
            else ("unit", "unit_index", "label", "number", "category", "iou", "detector", "threshold")
        )
        rows = []
        for name in names:
            for u in self.layers[name].units:
                row = {"layer": name}
                row.update({k: u[k] for k in keys if k in u})
                rows.append(row)
                if compact:
                    continue
                for cat, pc in (u.get("per_category") or {}).items():
                    for key in ("label", "iou", "truth", "activation", "intersect"):
                        row[f"{cat}-{key}"] = pc.get(key)
        return rows

    def to_dataframe(self, layer: Optional[str] = None):
        """:meth:`table` as a ``pandas.DataFrame``: one row per unit, the columns of :meth:`table`.

        pandas is optional (``pip install 'broden-dissect[notebook]'``); ImportError says so.

        Example::

            df = result.to_dataframe("layer4")
            df[df.detector].groupby("category").size()
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install 'broden-dissect[notebook]' (or pandas)") from None
        return pd.DataFrame(self.table(layer))

    def to_csv(self, path: Union[str, Path], layer: Optional[str] = None) -> Path:
        """Write :meth:`table` as CSV (header = its keys; all layers when ``layer`` is None); return the path.

        Written atomically; no pandas needed.
        """
        import csv
        import io

        from broden_builder.shared import atomic_write_text

        rows = self.table(layer)
        keys: list = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        path = Path(path)
        atomic_write_text(path, buf.getvalue())
        return path

    def units_for(self, concept: str, layer: Optional[str] = None, detectors_only: bool = False) -> list:
        """Table rows of the units labelled ``concept`` (its name, synonym-free, with or without the
        ``-c``/``-s`` suffix: ``"red"`` finds ``red-c``), best IoU first, over all layers unless
        ``layer`` is given. Raises KeyError with the nearest labels when no unit carries it.

        Example::

            result.units_for("dog")[:3]    # [{'layer': 'layer4', 'unit': 12, 'label': 'dog', 'iou': 0.21, ...}]
        """
        from .tools import matches, unknown_concept

        rows = (
            self.table(layer)
            if layer is not None or len(self.layers) == 1
            else [r for name in self.layers for r in self.table(name)]
        )
        hits = [
            r for r in rows if matches(str(r.get("label", "")), concept) and (r.get("detector") or not detectors_only)
        ]
        if not hits and not any(matches(str(r.get("label", "")), concept) for r in rows):
            raise unknown_concept(concept, sorted({str(r.get("label", "")) for r in rows if r.get("label")}))
        return sorted(hits, key=lambda r: (-float(r["iou"]), r["layer"], r["unit_index"]))

    def top_images(self, unit: int, layer: Optional[str] = None, k: Optional[int] = None, store=None) -> list:
        """The top images of ``unit`` (1-based, as in the report) of ``layer``, best first: dicts with
        ``row``, ``path``, ``activation``, ``mask`` (bool [sh, sw], the pixels the tally counted) and
        ``map`` (float32 [h, w]). See :func:`dissect.tools.top_images`.
        """
        from .tools import top_images

        return top_images(self[self._name(layer)], unit, store if store is not None else self.store, k)

    def show_unit(self, unit: int, layer: Optional[str] = None, k: Optional[int] = None, store=None):
        """A matplotlib Figure of ``unit``'s top images with its mask (needs matplotlib)."""
        from .tools import show_unit

        return show_unit(self[self._name(layer)], unit, store if store is not None else self.store, k)

    def _repr_html_(self) -> str:
        from .tools import layer_html

        return "".join(layer_html(r) for r in self.layers.values())

    def detectors(self, layer: Optional[str] = None) -> list:
        """Table rows of the detector units, best IoU first."""
        return sorted(
            (r for r in self.table(layer) if r.get("detector")), key=lambda r: (-r["iou"], r["layer"], r["unit_index"])
        )

    def iou(self, layer: Optional[str] = None) -> np.ndarray:
        """float32 [units, labels]: every unit's IoU with every label (columns: :meth:`labels`)."""
        return self[self._name(layer)].iou

    def thresholds(self, layer: Optional[str] = None) -> np.ndarray:
        """float32 [units]: the activation threshold T_k of every unit."""
        return self[self._name(layer)].thresholds

    def labels(self, layer: Optional[str] = None) -> list:
        """The IoU matrix columns: ``[{"number", "name", "category"}, ...]``."""
        return self[self._name(layer)].labels

    def unit_masks(
        self,
        model,
        images,
        layer: Optional[str] = None,
        units: Optional[Sequence[int]] = None,
        top: int = 5,
        size: Optional[tuple] = None,
    ):
        """Segment new images with the layer's units: ``(masks, units)``.

        ``images``: a [B, 3, H, W] tensor preprocessed like the store's images (see
        :func:`dissect.tools.preprocess`). ``units``: 0-based unit indices; by default the
        ``top`` best detectors. ``masks`` is bool [B, len(units), H, W] (act > T_k, upsampled);
        ``units`` the matching per-unit table rows (label, category, IoU).

        Example::

            x = preprocess([rgb], size=224)
            masks, rows = result.unit_masks(model, x, "layer4", top=3)
            rows[0]["label"], masks[0, 0].float().mean()
        """
        from .tools import unit_masks

        res = self[layer]
        chosen = [u["unit_index"] for u in res.detectors()[:top]] if units is None else list(units)
        lay = (res.settings.get("layout") or {}) if isinstance(res.settings.get("layout"), dict) else {}
        forced = lay.get("kind") if str(lay.get("source", "")).startswith("forced") else None
        masks = unit_masks(
            model,
            res.settings.get("selector") or res.layer,
            images,
            res.thresholds,
            units=chosen,
            size=size,
            layout=forced,
            mode=res.settings.get("upsample") or "bilinear",
        )
        return masks, [res.units[u] for u in chosen]

    def explain(
        self,
        source,
        layer: Optional[str] = None,
        length: int = 3,
        beam: int = 5,
        store=None,
        batch_size: int = 32,
        workers: int = 0,
        device: str = "cpu",
        write: bool = True,
    ) -> list:
        """Compositional explanations of every unit (Mu & Andreas, NeurIPS 2020): the best formula
        of up to ``length`` concepts with AND, OR, AND NOT, by beam search of width ``beam``.

        ``source``: the model (``nn.Module`` or ``LoadedModel``; run again over the store) or the
        activations that were scored (array, tensor, .npy/.pt path). Uses the layer's thresholds
        and settings from its result folder and writes ``<layer>/explanations.csv`` there
        (``write=True``). Returns one dict per unit: ``unit`` (1-based), ``formula``, ``iou``,
        ``single_iou``, ``single_label``, ``length``.

        Example::

            rows = result.explain(model, "layer4")
            rows[0]["formula"], rows[0]["iou"]
        """
        from torch import nn

        from .explain.run import explain_result
        from .capture import LoadedModel

        res = self[self._name(layer)]
        if res.path is None:
            raise DissectError("explain reads the layer's result folder: run(out=...) or score(out=...) first")
        is_model = isinstance(source, (nn.Module, LoadedModel))
        ex = explain_result(
            res.path,
            activations=None if is_model else source,
            model=source if is_model else None,
            store=store if store is not None else self.store,
            length=length,
            beam=beam,
            batch_size=batch_size,
            workers=workers,
            device=device,
            write=write,
        )
        return ex.rows()

    def summary(self) -> dict:
        """``{layer: {"units", "detectors", "per_category", "unique_detectors"}}``."""
        return {n: r.summary for n, r in self.layers.items()}

    # -------------------------------------------------------------- report / load
    def report(self, out: Optional[Union[str, Path]] = None, store=None, quiet: bool = True, **kwargs) -> Path:
        """Write the HTML report of the results folder (default: where :meth:`Dissection.run` wrote);
        return index.html."""
        from .report import write_reports

        out = Path(out) if out is not None else self.out
        if out is None:
            raise DissectError("these results were not written to a folder: run(out=...) first, or pass out=")
        in_memory = [r for r in self.layers.values() if r.path is not None and r.topk_maps is not None]
        return write_reports(
            out, store=store if store is not None else self.store, quiet=quiet, results=in_memory, **kwargs
        )

    @classmethod
    def load(cls, out: Union[str, Path], load_maps: bool = False) -> "DissectionResult":
        """Read every ``out/<layer>/`` written by ``dissect run``/``score`` (or :meth:`Dissection.run`);
        an SAE features result (``out/<layer>.sae/``) is keyed ``"<layer>.sae"``, beside the units'."""
        from .results import find_layer_folders, load_result

        layers = {}
        for folder in find_layer_folders(out):
            res = load_result(folder, load_maps=load_maps)
            layers[res.layer + (".sae" if res.what == "feature" else "")] = res
        if not layers:
            raise NoResultsError(f"{out}: no dissection results (no <layer>/result.json)")
        return cls(layers, out)


class Dissection:
    """Dissect ``layers`` of ``model`` on the Broden store at ``store``.

    ``model``: an ``nn.Module`` (put in eval mode; moved to the chosen device) or a
    :class:`dissect.capture.LoadedModel`. ``layers``: module names as ``dict(model.named_modules())``
    spells them (``"layer4"``, ``"features.28"``); ``dissect layers --model ...`` lists them.
    ``store``: a store folder or a :class:`broden_builder.BrodenStore`. ``config``: a
    :class:`dissect.DissectConfig`; keyword settings override its fields.

    Example::

        from dissect import Dissection
        d = Dissection(model, ["layer4"], "broden1_224", union="original", quantile=0.005)
        result = d.run(out="out")      # writes out/layer4/ and the report
        result.table()[0]              # {'layer': 'layer4', 'unit': 1, 'label': ..., 'iou': ...}
    """

    def __init__(self, model, layers: Union[str, Sequence[str]], store, config=None, **settings):
        self.model = model
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.store = store
        self.config = _config(config, settings)

    def run(
        self, out: Optional[Union[str, Path]] = None, report: bool = True, controls: bool = False, seed: int = 0
    ) -> DissectionResult:
        """Run the network over the store once and score every layer.

        With ``out``, results go to ``out/<layer>/`` (resumable: rerunning continues an
        interrupted run) and, with ``report=True``, the HTML report to ``out/index.html``.
        ``controls=True`` (needs ``out``) also dissects the random-init and rotated baselines into
        ``out/controls/`` (dissect.tools dissect_with_controls; ``seed`` as documented there); the
        result's ``controls`` is then a ControlRuns (``.random``, ``.rotated``, ``.table``).
        """
        from broden_builder.shared import progress_to

        from .engine import dissect_model

        runs: Optional[ControlRuns] = None
        with progress_to(self.config.progress):
            if controls:
                if out is None:
                    raise DissectError("controls=True needs out= (the controls are written to out/controls/)")
                from .tools import dissect_with_controls

                runs = dissect_with_controls(self.model, self.layers, self.store, self.config, out, seed=seed)
                layers = runs.trained
            else:
                layers = dissect_model(self.model, self.layers, self.store, self.config, out=out)
            result = DissectionResult(layers, out, self.store)
            result.controls = runs
            if out is not None and report and _is_rank0():
                result.report(quiet=self.config.quiet)
        return result

    @staticmethod
    def score(
        activations,
        store,
        name: str = "activations",
        out: Optional[Union[str, Path]] = None,
        report: bool = True,
        config=None,
        **settings,
    ) -> DissectionResult:
        """Score activations computed elsewhere ([N, units, h, w] in index.csv order; array, tensor, .npy or .pt).

        Example::

            result = Dissection.score("feats.npy", "broden1_224", name="mylayer", out="out")
        """
        from .engine import score_activations

        res = score_activations(activations, store, _config(config, settings), out=out, name=name)
        result = DissectionResult({name: res}, out, store)
        if out is not None and report and _is_rank0():
            result.report()
        return result
