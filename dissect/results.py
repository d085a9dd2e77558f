"""The result of dissecting one layer (:class:`LayerResult`): scored from a Tally, written to and
read back from ``O/<layer>/``. The one module that knows the result files.

Files (all written atomically): ``result.json``, ``tally.csv`` (the original tools' table),
``iou.npy`` float32 [U, L] (columns = result.json "labels"), ``thresholds.npy`` float32 [U],
``topk.npz`` (``indices`` int64 [U, k] rows of index.csv, ``values`` float32 [U, k], ``maps``
float16 [U, k, h, w] at the layer's resolution). The report renders a LayerResult from memory
(dissect run) or as loaded here (dissect report).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from broden_builder.shared import atomic_write_bytes, atomic_write_text, fsync_dir, sweep_temp_files

from .errors import DissectError

RESULT_FILES = ("result.json", "tally.csv", "iou.npy", "thresholds.npy", "topk.npz")


def safe_name(text: str) -> str:
    """``text`` as one safe, visible folder or file name (layer names like ``features.3``): other
    characters become '_', and a leading '.' too (so never '.', '..' or a hidden name)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "_"
    return "_" + name[1:] if name.startswith(".") else name


def layer_folder(out: Union[str, Path], layer: str, feature: bool = False) -> Path:
    """``out/<layer>/``: where the result of ``layer`` (a layer name or result name) lives; with
    ``feature``, ``out/<layer>.sae/``: its SAE features' result, beside the units' and never mixed."""
    return Path(out) / (safe_name(layer) + (".sae" if feature else ""))


def has_result(directory: Union[str, Path]) -> bool:
    """Whether ``directory`` holds a layer result (its result.json)."""
    return (Path(directory) / "result.json").is_file()


class ResultsError(DissectError):
    """A results folder is missing a file or holds one in the wrong shape; the message names the file."""


@dataclass
class LayerResult:
    """Everything known about one dissected layer (see result.json for the field meanings)."""

    layer: str
    iou: np.ndarray  # float32 [U, L]
    thresholds: np.ndarray  # float32 [U]
    labels: list  # [{"number", "name", "category"}] = columns of iou
    units: list  # per-unit dicts, unit_index order
    summary: dict
    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    store: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    version: str = ""
    topk_indices: Optional[np.ndarray] = None  # int64 [U, k]
    topk_values: Optional[np.ndarray] = None  # float32 [U, k]
    topk_maps: Optional[np.ndarray] = None  # float16 (lossless) or float32 [U, k, h, w]
    path: Optional[Path] = None  # the folder it was written to or read from

    @property
    def categories(self) -> list:
        """Categories in store order (the settings' list, then any others in the order they appear)."""
        cats = list(self.settings.get("categories") or [])
        for c in list(self.summary.get("per_category", {})) + [
            c for u in self.units for c in list(u.get("per_category", {})) + [u.get("category")]
        ]:
            if c and c not in cats:
                cats.append(c)
        return cats

    @property
    def iou_threshold(self) -> float:
        return float(self.settings.get("iou_threshold", 0.04) or 0.04)

    def detectors(self) -> list:
        """The units whose best IoU reaches the threshold, best first."""
        return sorted((u for u in self.units if u["detector"]), key=lambda u: (-u["iou"], u["unit_index"]))

    def sorted_units(self) -> list:
        """All units by IoU, best first (ties: smaller unit index first)."""
        return sorted(self.units, key=lambda u: (-float(u.get("iou", 0.0)), int(u["unit_index"])))

    def summary_line(self) -> str:
        """E.g. ``layer4: 143/512 units are detectors (object 61, texture 40, color 20, ...)``."""
        s = self.summary
        order = {c: i for i, c in enumerate(s.get("per_category", {}))}
        parts = sorted(
            ((c, n) for c, n in s.get("per_category", {}).items() if n), key=lambda cn: (-cn[1], order[cn[0]])
        )
        inner = ", ".join(f"{c} {n}" for c, n in parts)
        line = f"{self.layer}: {s['detectors']}/{s['units']} {self.what}s are detectors" + (
            f" ({inner})" if inner else ""
        )
        if "significant" in s:
            n = self.settings.get("null")
            line += (
                f"; {s['significant']} significant against the permutation null "
                f"(q <= {float(self.settings.get('alpha', 0.05)):g}" + (f", {n} permutations)" if n else ")")
            )
        return line + (f"; {self.constant_line()}" if s.get("constant") else "")

    @property
    def what(self) -> str:
        """What was dissected: "feature" (an SAE's features, settings["sae"]) or "unit"."""
        return "feature" if self.settings.get("dissected") == "feature" else "unit"

    def constant_line(self) -> str:
        """'' when no unit is constant, else e.g. ``1,280 of 1,280 units are constant (all 0): this layer says
        nothing`` (the units whose activations took one value over the whole probe set)."""
        return constant_text(self.summary, self.what)

    def to_json(self) -> dict:
        return {
            "layer": self.layer,
            "model": self.model,
            "store": self.store,
            "settings": self.settings,
            "labels": self.labels,
            "units": self.units,
            "summary": self.summary,
            "timings": self.timings,
            "version": self.version,
        }


# ---------------------------------------------------------------------------- scoring
def is_detector(unit: dict, iou_threshold: float = 0.04) -> bool:
    """The unit's own ``detector`` flag when present, else IoU >= the threshold."""
    if "detector" in unit:
        return bool(unit["detector"])
    return float(unit.get("iou", 0.0)) >= iou_threshold


def summarise(units: Sequence[dict], categories: Sequence[str], iou_threshold: float = 0.04) -> dict:
    """Detector counts of one layer, the one summary (result.json, the report, the demo, compare).

    Returns ``{"units", "detectors", "per_category": {cat: detector units}, "unique_detectors":
    {cat: distinct labels among them}, "concepts": {cat: {label name: detector units}}}`` with every
    category of ``categories`` present (zero when it has none), then any other category a detector
    has. A detector: :func:`is_detector`; a constant unit (``"constant": true``, see
    :func:`mark_constant`) never is one, and ``"constant"``, ``"constant_values"`` count them
    (:func:`constant_summary`). result.json stores all but ``concepts`` (:data:`SUMMARY_STORED`).
    """
    per: dict = {c: 0 for c in categories}
    labels: dict = {c: set() for c in categories}
    concepts: dict = {c: {} for c in categories}
    det = 0
    for u in units:
        if u.get("constant") or not is_detector(u, iou_threshold):
            continue
        det, c = det + 1, u["category"]
        per[c] = per.get(c, 0) + 1
        labels.setdefault(c, set()).add(u.get("number", u["label"]))
        concepts.setdefault(c, {})
        concepts[c][u["label"]] = concepts[c].get(u["label"], 0) + 1
    out = {
        "units": len(units),
        "detectors": det,
        "per_category": per,
        "unique_detectors": {c: len(v) for c, v in labels.items()},
        "concepts": concepts,
        **constant_summary(units),
    }
    if any("significant" in u for u in units):  # the permutation null ran (--null N)
        from .stats import significant_detectors

        sig = significant_detectors(SimpleNamespace(units=units))
        out["significant"] = len(sig)
        out["significant_per_category"] = {c: sum(1 for x in sig if x["category"] == c) for c in per}
    return out


#: The summary's entries that result.json stores (the significant ones only with the null).
SUMMARY_STORED = (
    "units",
    "detectors",
    "per_category",
    "unique_detectors",
    "constant",
    "constant_values",
    "significant",
    "significant_per_category",
)


def _stored(summary: dict) -> dict:
    return {k: summary[k] for k in SUMMARY_STORED if k in summary}


def add_null(units: Sequence[dict], null: np.ndarray, alpha: float, detector: str) -> None:
    """Add to each unit dict (unit order) the permutation null's fields (dissect.stats.null_fields:
    p_value, q_value, significant, null_iou, null_iou_95, p_method) against its best IoU, keep the
    paper's rule as "iou_detector" and set "detector" by ``detector`` ('iou', 'significant', 'both')."""
    from .stats import is_detector, null_fields

    observed = np.array([float(u["iou"]) for u in units], dtype=np.float64)
    for u, f in zip(units, null_fields(observed, np.asarray(null, dtype=np.float64), alpha)):
        u.update(f)
        u["iou_detector"] = bool(u["detector"])
        u["detector"] = is_detector(u, detector)


def _number(v: float) -> str:
    return f"{v + 0.0:g}"  # -0.0 as 0


def constant_text(summary: dict, what: str = "unit") -> str:
    """The summary's constant units in words ('' when none): ``3 of 96 units are constant (all 0)``;
    ``: this layer says nothing`` when every unit is. ``what``: "unit", or "feature" for an SAE's."""
    n, total = int(summary.get("constant", 0)), int(summary.get("units", 0))
    if not n:
        return ""
    values = summary.get("constant_values") or {}
    how = ", ".join(f"{c:,} all {v}" if len(values) > 1 else f"all {v}" for v, c in values.items())
    text = f"{n:,} of {total:,} {what}s are constant" + (f" ({how})" if how else "")
    return text + (": this layer says nothing" if n == total else "")


def mark_constant(units: Sequence[dict], constant: np.ndarray, values: np.ndarray) -> None:
    """Set each unit's ``constant`` (bool [U], unit_index order) and, for a constant unit, its
    ``constant_value``; a constant unit is never a detector and never significant (its mask
    ``a > T`` with T = its one value is empty: any IoU it shows is a rounding accident)."""
    for u in units:
        i = int(u["unit_index"])
        u["constant"] = bool(constant[i])
        if u["constant"]:
            u["constant_value"] = float(values[i])
            u["detector"] = False
            for k in ("significant", "iou_detector"):
                if k in u:
                    u[k] = False


def constant_summary(units: Sequence[dict]) -> dict:
    """``{"constant": n, "constant_values": {"0": n0, ...}}`` of units marked by :func:`mark_constant`."""
    values: dict = {}
    for u in units:
        if u.get("constant"):
            key = _number(float(u.get("constant_value", 0.0)))
            values[key] = values.get(key, 0) + 1
    return {"constant": sum(values.values()), "constant_values": values}


def predicted_label_models(build_info: Optional[dict]) -> dict:
    """{label name: "MODEL"} of the labels a segmentation model predicted rather than annotated, from a
    store's build.json (``predicted_labels``: per label, its ``models`` with their ``model`` spec;
    docs/custom_concepts.md "Segmenter labels are predictions"); {} for a store of annotations only
    or a record of another shape."""
    out = {}
    for name, rec in ((build_info or {}).get("predicted_labels") or {}).items():
        models = rec.get("models") if isinstance(rec, dict) else None
        names = [str(m.get("model")) for m in models or [] if isinstance(m, dict) and m.get("model")]
        out[str(name)] = ", ".join(names) if names else "a segmentation model"
    return out


def mark_predicted(units: Sequence[dict], predicted: dict) -> None:
    """Set ``predicted_by`` ("MODEL") on each unit dict whose best label a segmentation model predicted
    (``predicted``: :func:`predicted_label_models`), and on its per-category best labels likewise."""
    for u in units:
        if str(u.get("label")) in predicted:
            u["predicted_by"] = predicted[str(u["label"])]
        for p in (u.get("per_category") or {}).values():
            if isinstance(p, dict) and str(p.get("label")) in predicted:
                p["predicted_by"] = predicted[str(p["label"])]


def label_predicted_by(doc_or_result, unit: dict) -> str:
    """The model that predicted ``unit``'s label ("" when annotated): the unit's ``predicted_by``, or,
    for a result scored before units carried it, the result's ``store["predicted_labels"]``."""
    if unit.get("predicted_by"):
        return str(unit["predicted_by"])
    store = doc_or_result.get("store") if isinstance(doc_or_result, dict) else getattr(doc_or_result, "store", None)
    return str(((store or {}).get("predicted_labels") or {}).get(str(unit.get("label")), ""))


def predicted_detectors(doc_or_result, iou_threshold: float = 0.04) -> dict:
    """{"MODEL": detector units whose label that segmentation model predicted} of a result (result.json
    dict or LayerResult); {} when every detector's label is annotated."""
    units = doc_or_result.get("units") if isinstance(doc_or_result, dict) else doc_or_result.units
    out: dict = {}
    for u in units or []:
        model = label_predicted_by(doc_or_result, u)
        if model and is_detector(u, iou_threshold):
            out[model] = out.get(model, 0) + 1
    return out


def predicted_text(model: str) -> str:
    """How results name a predicted label: "predicted by MODEL (segmentation model), not annotated"."""
    return f"predicted by {model} (segmentation model), not annotated" if model else ""


def build_layer_result(
    layer: str,
    tally,
    union: str,
    iou_threshold: float,
    label_names: dict,
    thresholds: np.ndarray,
    settings: Optional[dict] = None,
    model: Optional[dict] = None,
    store: Optional[dict] = None,
    timings: Optional[dict] = None,
    version: str = "",
    topk: Optional[tuple] = None,
    null: Optional[np.ndarray] = None,
    alpha: float = 0.05,
    detector: str = "iou",
    constant: Optional[tuple] = None,
    predicted: Optional[dict] = None,
) -> LayerResult:
    """Score a finished dissect.stats.Tally (via dissect.stats.scores) into a LayerResult. ``null``
    [N, U]: each permutation's best IoU per unit (dissect.null_pass), which adds p- and q-values,
    significance at ``alpha`` and the null IoUs to every unit; ``detector`` ('iou', 'significant',
    'both') decides what counts as a detector (dissect.stats.pvalues.is_detector).
    ``constant``: (bool [U], float [U]) from dissect.stats.UnitRange (constant(), values()): the
    units with one value over the probe set, marked as such (never detectors, never significant) and counted.
    ``predicted``: {label name: "MODEL"} (:func:`predicted_label_models` of the store's build.json): units whose
    label a segmentation model predicted carry ``predicted_by``, and the store record ``predicted_labels``."""
    from .stats import scores

    units = scores(tally, union=union, iou_threshold=iou_threshold, label_names=label_names)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    for u in units:
        u["threshold"] = float(thresholds[u["unit_index"]])
    if null is not None:
        add_null(units, null, alpha, detector)
    labels = [
        {"number": n, "name": label_names.get(n, str(n)), "category": c} for n, c in zip(tally.labels, tally.primary)
    ]
    if constant is not None:
        mark_constant(units, np.asarray(constant[0], dtype=bool), np.asarray(constant[1], dtype=np.float64))
    if predicted:
        mark_predicted(units, predicted)
        store = dict(store or {}, predicted_labels=dict(predicted))
    iou = tally.iou(union).cpu().numpy().astype(np.float32)
    res = LayerResult(
        layer=layer,
        iou=iou,
        thresholds=thresholds,
        labels=labels,
        units=units,
        summary=_stored(summarise(units, tally.categories, iou_threshold)),
        settings=dict(settings or {}),
        model=dict(model or {}),
        store=dict(store or {}),
        timings=dict(timings or {}),
        version=version,
    )
    if topk is not None:
        res.topk_indices, res.topk_values, res.topk_maps = topk
    return res


# ---------------------------------------------------------------------------- writing
def tally_csv_text(res: LayerResult) -> str:
    """tally.csv of the original tools: one row per unit, best IoU first (ties: lower unit)."""
    cats = list(res.summary["per_category"])
    header = ["unit", "category", "label", "score"]
    for c in cats:
        header += [f"{c}-label", f"{c}-truth", f"{c}-activation", f"{c}-intersect", f"{c}-iou"]
    null = bool(res.units) and all("p_value" in u for u in res.units)
    if null:  # the permutation null (--null N)
        header += ["null-iou", "null-iou-95", "p-value", "q-value"]
    predicted = bool((res.store or {}).get("predicted_labels")) or any(u.get("predicted_by") for u in res.units)
    if predicted:  # a store with labels a segmentation model predicted: which unit's label is one
        header += ["label-predicted-by"]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for u in sorted(res.units, key=lambda x: (-x["iou"], x["unit_index"])):
        row = [u["unit"], u["category"], u["label"], repr(u["iou"])]
        for c in cats:
            p = u["per_category"][c]
            row += [p["label"], p["truth"], p["activation"], p["intersect"], repr(p["iou"])]
        if null:
            row += [repr(u["null_iou"]), repr(u["null_iou_95"]), repr(u["p_value"]), repr(u["q_value"])]
        if predicted:
            row += [label_predicted_by(res, u)]
        w.writerow(row)
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _maps_dtype(maps) -> np.ndarray:
    """float16 or float32 maps as they are (the values the tally thresholded); anything else as float32."""
    maps = np.asarray(maps)
    return maps if maps.dtype in (np.float16, np.float32) else maps.astype(np.float32)


def _write_files(d: Path, res: LayerResult) -> None:
    atomic_write_bytes(d / "iou.npy", _npy_bytes(np.asarray(res.iou, dtype=np.float32)), durable=True)
    atomic_write_bytes(d / "thresholds.npy", _npy_bytes(np.asarray(res.thresholds, dtype=np.float32)), durable=True)
    if res.topk_indices is not None:
        buf = io.BytesIO()
        np.savez(
            buf,
            indices=np.asarray(res.topk_indices, dtype=np.int64),
            values=np.asarray(res.topk_values, dtype=np.float32),
            maps=_maps_dtype(res.topk_maps),
        )
        atomic_write_bytes(d / "topk.npz", buf.getvalue(), durable=True)
    atomic_write_text(d / "tally.csv", tally_csv_text(res), durable=True)
    atomic_write_text(d / "result.json", json.dumps(res.to_json(), indent=1, allow_nan=False) + "\n", durable=True)


def write_layer_result(directory: Union[str, Path], res: LayerResult) -> Path:
    """Write result.json, tally.csv, iou.npy, thresholds.npy, topk.npz as ``directory``, all at once.

    The files go into a temporary folder beside it (``.<name>.writing-*``, fsynced), which
    then replaces ``directory`` by a rename (an existing folder is first renamed to
    ``.<name>.old-*`` and deleted after). A kill leaves the old folder, no folder, or the new
    one, never files of two runs side by side (a result is written whole or not at all); :func:`sweep_partial_results`
    removes the debris. Callers drop their checkpoint only after this returns.
    """
    d = Path(directory)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.writing-", dir=d.parent))
    old = None
    try:
        _write_files(tmp, res)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a result folder is a normal folder
        if d.exists() or d.is_symlink():
            old = d.parent / f".{d.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(d, old)
        os.replace(tmp, d)
        fsync_dir(d.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    res.path = d
    return d


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sweep_partial_results(out: Union[str, Path]) -> None:
    """Remove what killed writers left in ``out``: ``.<layer>.writing-*``/``.old-*`` folders and
    ``.NAME.XXXX.tmp`` files. Call it only while holding the lock of ``out``."""
    out = Path(out)
    if not out.is_dir():
        return
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith(".") and (".writing-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
    sweep_temp_files(out)


# ---------------------------------------------------------------------------- the --out lock
#: real path of each results folder this process holds the lock of -> nesting depth
_HELD: dict = {}


@contextmanager
def results_lock(out: Union[str, Path], command: str) -> Iterator[Path]:
    """Hold the exclusive lock of the results folder ``out`` for the ``with`` block: the one way
    every ``dissect`` command that writes into ``--out`` (run, score, report, explain, compare,
    ablate, and the describe and ``sae train`` commands) takes it.

    The lock is broden_builder.store.locking's (``OUT/.lock``, an OS lock the OS drops when the
    holder dies; ``OUT/.lock.holder`` names the holder). A second process is refused at once with
    LockedError (one line naming the folder and the holder's PID, host and command), never queued.
    Re-entrant within one process: a command that holds it may call another that takes it again
    (``explain`` scoring first). On the first entry, what killed writers left is swept
    (:func:`sweep_partial_results`). Raises DissectError when ``out`` cannot be created.
    """
    from broden_builder.shared import exclusive

    out = Path(out)
    key = os.path.realpath(out)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield out
        finally:
            _HELD[key] -= 1
        return
    try:
        lock = exclusive(out, command)
        lock.__enter__()
    except OSError as e:
        raise DissectError(f"{e.filename or out}: cannot use as the output folder ({e.strerror or e})") from None
    _HELD[key] = 1
    try:
        sweep_partial_results(out)
        yield out
    finally:
        _HELD.pop(key, None)
        lock.__exit__(None, None, None)


def commit_files(directory: Union[str, Path], files: dict) -> None:
    """Write the files of one result (``{name: str | bytes}``) into ``directory`` as one commit:
    every file is first written and fsynced under a temporary name, then all are renamed in the
    given order (put the file that records the others last). A failure while writing (a full
    disk) leaves every old file in place and names the path; call it holding :func:`results_lock`."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, data in files.items():
            tmp = d / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
            staged.append((tmp, d / name))
            atomic_write_bytes(tmp, data.encode("utf-8") if isinstance(data, str) else data, durable=True)
        for tmp, final in staged:
            os.replace(tmp, final)
        fsync_dir(d)
    except BaseException:
        for tmp, _ in staged:
            try:
                tmp.unlink()
            except OSError:
                pass
        raise


# ---------------------------------------------------------------------------- reading
def _natural_key(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t != ""]


def find_layer_folders(out_dir) -> list:
    """Subfolders of ``out_dir`` holding a result.json, in natural name order (layer2 < layer10)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ResultsError(f"{out_dir}: results folder does not exist")
    found = [p.parent for p in out_dir.glob("*/result.json")]
    return sorted(found, key=lambda p: _natural_key(p.name))


def result_folders(path: Union[str, Path]) -> list:
    """The layer folders of ``path``: itself when it is one, else :func:`find_layer_folders`."""
    return [Path(path)] if has_result(path) else find_layer_folders(path)


def read_result_json(directory: Union[str, Path]) -> dict:
    """``directory/result.json`` as a dict, checked (units and their keys); raises ResultsError.
    For what needs the document only (names, settings, summary) without the arrays."""
    return _read_json(Path(directory) / "result.json")


def check_same_model(directory: Union[str, Path], current: dict, recorded=None) -> None:
    """Refuse (ResultsError) to reuse the result in ``directory`` with a model other than the one it was
    dissected with: ``current`` is the model's record (dissect.capture.model_record), ``recorded``
    result.json's "model" (read when not given). A result scored from activations is not compared."""
    from .capture import model_difference, model_words

    if recorded is None:
        recorded = read_result_json(directory).get("model")
    if not isinstance(recorded, dict) or recorded.get("kind") == "activations":
        return
    field = model_difference(recorded, current)
    if field is not None:
        raise ResultsError(
            f"{directory} was dissected with {model_words(recorded)}, not with {model_words(current)} "
            f"({field} differs); its thresholds and units do not fit this model: delete {directory} or "
            f"give another --out"
        )


def out_outside_store(
    out: Union[str, Path],
    store: Union[str, Path],
    what: str = "--out",
    names: Sequence[str] = (),
    kind: str = "store",
) -> None:
    """Refuse (ResultsError) an output folder that is the store folder or inside it (symlinks
    resolved): results, locks and caches written there would damage the store. ``names``: the
    results the command writes, whose folders (``out/<name>``, ``out/<name>.sae``) are replaced whole,
    so none may be the store or hold it. ``kind``: what ``store`` is, for the message (``store``, or
    ``image folder`` for an input folder of images that must stay as it is)."""
    o, s = Path(out).expanduser().resolve(), Path(store).expanduser().resolve()
    for name in names:
        for folder in (layer_folder(o, name), layer_folder(o, name, feature=True)):
            if folder == s or folder in s.parents:
                raise ResultsError(
                    f"the result folder of {name!r}, {folder}, would replace the {kind} {store} (a result folder "
                    f"is written whole); choose another --out"
                )
    if o == s or s in o.parents:
        why = "(broden validate would reject it)" if kind == "store" else "(its next reading would take them in)"
        where = ("the store folder" if kind == "store" else f"the {kind}") if o == s else f"inside the {kind}"
        raise ResultsError(
            f"{what} {out} is {where} {store}: writing results "
            f"there would damage the {kind} {why}; choose a folder outside the {kind}"
        )


def open_store(result: Union[LayerResult, dict], store=None, base: Optional[Path] = None):
    """The Broden store a result was dissected on: ``store`` (a BrodenStore or its folder), else the
    folder result.json records (a relative one also against ``base``). One policy for every reader:
    the store must be the one dissected, so a recorded fingerprint that differs is refused.
    Raises ResultsError naming the store (missing, not a store, other fingerprint)."""
    from broden_builder import BrodenStore

    doc = result.to_json() if isinstance(result, LayerResult) else result
    rec = doc.get("store") or {}
    if store is None or isinstance(store, (str, Path)):
        recorded = [Path(rec["path"])] + ([Path(base) / rec["path"]] if base else []) if rec.get("path") else []
        candidates = [Path(store)] if store is not None else recorded
        if not candidates:
            raise ResultsError(f"layer {doc.get('layer')}: its result records no store; give the store")
        found = next((c for c in candidates if (c / "index.csv").is_file() or str(c).endswith(".tar")), None)
        if found is None and store is not None:
            raise ResultsError(f"{store}: not a Broden store (no index.csv)")
        if found is None:
            raise ResultsError(f"store {candidates[0]} not found (no index.csv there; give the store)")
        store = BrodenStore(found)
    want = rec.get("fingerprint")
    if want and store.fingerprint() != want:
        raise ResultsError(
            f"{store.root} is not the store layer {doc.get('layer')} was dissected on "
            f"(fingerprint {store.fingerprint()[:12]}, the result has {want[:12]})"
        )
    return store


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: file is missing (not a dissection result folder?)") from None
    except ValueError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from None
    units = doc.get("units")
    if not isinstance(units, list):
        raise ResultsError(f"{path}: 'units' must be a list")
    for i, u in enumerate(units):
        for key in ("unit_index", "label", "category", "iou"):
            if key not in u:
                raise ResultsError(f"{path}: units[{i}] lacks {key!r}")
    return doc


def _read_npy(path: Path, shape: tuple, what: str) -> np.ndarray:
    if not path.is_file():
        raise ResultsError(f"{path}: file is missing (not a dissection result folder?)")
    arr = np.load(path, allow_pickle=False)
    if arr.shape != shape:
        raise ResultsError(f"{path}: shape {arr.shape} does not match result.json ({what})")
    return arr


def _read_topk(res: LayerResult, path: Path, load_maps: bool) -> None:
    n = len(res.units)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("indices", "maps") if k not in z.files]
        if missing:
            raise ResultsError(f"{path}: lacks array(s) {missing}")
        idx = z["indices"]
        vals = z["values"] if "values" in z.files else None
        maps = z["maps"] if load_maps else None
    if idx.ndim != 2 or idx.shape[0] != n:
        raise ResultsError(f"{path}: 'indices' has shape {idx.shape}, expected [{n}, k]")
    if maps is not None and (maps.ndim != 4 or maps.shape[:2] != idx.shape):
        raise ResultsError(f"{path}: 'maps' has shape {maps.shape}, expected [{n}, {idx.shape[1]}, h, w]")
    res.topk_indices, res.topk_values, res.topk_maps = idx.astype(np.int64), vals, maps


def load_result(directory: Union[str, Path], load_maps: bool = True) -> LayerResult:
    """Read ``O/<layer>/``; raises ResultsError naming a missing or malformed file."""
    d = Path(directory)
    doc = _read_json(d / "result.json")
    n, labels = len(doc["units"]), doc.get("labels", [])
    res = LayerResult(
        layer=str(doc.get("layer") or d.name),
        labels=labels,
        units=doc["units"],
        iou=_read_npy(d / "iou.npy", (n, len(labels)), f"{n} units x {len(labels)} labels"),
        thresholds=_read_npy(d / "thresholds.npy", (n,), f"{n} units").astype(np.float32),
        summary=doc.get("summary") or {},
        settings=doc.get("settings", {}),
        model=doc.get("model", {}),
        store=doc.get("store", {}),
        timings=doc.get("timings", {}),
        version=doc.get("version", ""),
        path=d,
    )
    if (d / "topk.npz").is_file():
        _read_topk(res, d / "topk.npz", load_maps)
    return res
