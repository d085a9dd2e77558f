"""Unit ablation (Bau et al., PNAS 2020, "Understanding the role of individual units in a deep
neural network"): switch off units of a layer and measure the change of a classifier's
accuracy on every class.

``ablate(model, layer, units, data)`` runs the classifier over a labelled image set twice per
batch: as it is, and with the units' outputs replaced (``mode="zero"``: 0, as in the paper;
``mode="mean"``: each unit's mean output over the whole data set and all positions, computed
in a first pass). Dataset label k is taken to be the model's logit k (ImageFolder sorts class
folders by name, as torchvision's ImageNet class indices do).

Data: a folder in torchvision's ImageFolder layout (``root/<class>/<image>``), a folder written
by HF ``datasets`` ``save_to_disk``, or ``hf:NAME[:SPLIT]`` (``datasets.load_dataset``); an HF
dataset needs an image and a label column (``--image-column``, ``--label-column``).
Images are resized to the input size (bilinear) and normalised with mean/std.
"""

from __future__ import annotations

import logging

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from broden_builder.shared import load_whole
from broden_builder.torch_dataset import normalise, rgb_array

from ..errors import DissectError
from ..results import ResultsError, load_result

MODES = ("zero", "mean")
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class AblationError(DissectError):
    """Bad input to an ablation (data, units, layer); the message names the file or value."""


def result_preprocessing(
    layer_dir: Union[str, Path], model_prep: Optional[dict] = None, input_size=None, mean=None, std=None
) -> tuple:
    """The input size (H, W), mean and std (RGB in [0, 1]) for an ablation, and where they came from.

    The classifier must see its images as the dissection fed them: when ``layer_dir`` holds a
    result, its recorded ``settings.preprocessing`` is used, and an explicit ``input_size``/
    ``mean``/``std`` that differs from it is refused (AblationError naming both). Without a
    result: the explicit values, then the model's own (``model_prep``, dissect.models), then
    224 x 224 and ImageNet's mean/std (dissect.preprocess). Returns (size, mean, std, source text).
    """
    from ..capture import resolve_preprocessing
    from ..results import has_result, read_result_json

    if not has_result(layer_dir):
        p = resolve_preprocessing(model_prep, input_size, mean, std, None, None)
        return p.input_size, p.mean, p.std, p.record["chosen"]
    path = f"{Path(layer_dir) / 'result.json'}"  # for the messages; read by dissect.results
    try:
        rec = (read_result_json(layer_dir).get("settings") or {}).get("preprocessing") or {}
    except ResultsError as e:
        raise AblationError(str(e)) from None
    if rec.get("transform"):
        raise AblationError(
            f"{path}: the layer was dissected with a transform ({rec['transform']}), which a "
            "command line cannot repeat; call dissect.tools.ablate() with a dataset that applies it"
        )
    if not rec.get("input_size"):  # scored activations: the dissection never fed images
        p = resolve_preprocessing(model_prep, input_size, mean, std, None, None)
        return p.input_size, p.mean, p.std, p.record["chosen"] + f" ({path} records none: scored activations)"
    rec_size, rec_mean, rec_std = tuple(rec["input_size"]), tuple(rec["mean"]), tuple(rec["std"])
    for what, given, used in (("input size", input_size, rec_size), ("mean", mean, rec_mean), ("std", std, rec_std)):
        if given is not None and not np.allclose(np.asarray(given, float), np.asarray(used, float)):
            raise AblationError(
                f"{what} {tuple(given)} differs from the dissection's {used} ({path}); "
                f"leave it out to use the dissection's preprocessing"
            )
    return rec_size, rec_mean, rec_std, f"the dissection's ({path})"


# ---------------------------------------------------------------------------- data
class _Images(Dataset):
    """(normalised image [3, H, W], label) items from a list of loaders; the pixels as the store's
    images reach the model in a dissection (broden_builder.torch_dataset.rgb_array, normalise)."""

    def __init__(self, items: list, size: tuple, mean, std):
        self.items, self.size = items, tuple(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self):
        return len(self.items)

    def _image(self, k):
        raise NotImplementedError

    def __getitem__(self, k):
        im, label, where = self._image(k)
        try:
            arr = rgb_array(im, self.size)
        except (OSError, ValueError) as e:
            raise AblationError(f"{where}: cannot read image ({e})") from None
        return normalise(arr, self.mean, self.std), int(label)


class _Labelled(Dataset):
    """A classifier's data as the engine's batches see it: item k of ``data`` ((image [3, H, W],
    label) or {"image", "label"}) as {"index": k, "image", "label"}, collated into a Batch."""

    def __init__(self, data: Dataset):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, k):
        item = self.data[k]
        if isinstance(item, dict):
            return {"index": k, "image": item["image"], "label": item["label"]}
        x, y = item
        return {"index": k, "image": x, "label": y}


class _FolderImages(_Images):
    def _image(self, k):
        path, label = self.items[k]
        try:
            with Image.open(path) as im:
                load_whole(im)
                return im.copy(), label, path
        except OSError as e:
            raise AblationError(f"{path}: cannot read image ({e})") from None


class _HFImages(_Images):
    def __init__(self, ds, image_col, label_col, size, mean, std, name):
        super().__init__(list(range(len(ds))), size, mean, std)
        self.ds, self.image_col, self.label_col, self.name = ds, image_col, label_col, name

    def _image(self, k):
        row = self.ds[k]
        im = row[self.image_col]
        if not isinstance(im, Image.Image):
            raise AblationError(f"{self.name}: row {k} column {self.image_col!r} is {type(im).__name__}, not an image")
        return im, row[self.label_col], f"{self.name} row {k}"


def open_data(
    data: str,
    size: tuple,
    mean,
    std,
    image_column: str = "image",
    label_column: str = "label",
    split: Optional[str] = None,
) -> tuple:
    """(Dataset of (image, label), class names) for an ImageFolder path, a save_to_disk folder or
    ``hf:NAME[:SPLIT]``. Raises AblationError naming the problem."""
    if data.startswith("hf:"):
        name = data[3:]
        if ":" in name:
            name, split = name.rsplit(":", 1)
        try:
            import datasets
        except ImportError:
            raise AblationError("HF datasets need the 'datasets' package: pip install 'broden-dissect[hf]'") from None
        try:
            ds = datasets.load_dataset(name, split=split or "validation")
        except Exception as e:  # noqa: BLE001 - the library raises many kinds
            raise AblationError(f"hf:{name}: cannot load ({type(e).__name__}: {e})") from None
        return _hf(ds, image_column, label_column, size, mean, std, f"hf:{name}")
    root = Path(data)
    if not root.is_dir():
        raise AblationError(
            f"{root}: data folder does not exist (give an ImageFolder folder, a datasets "
            f"save_to_disk folder, or hf:NAME)"
        )
    if (root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file():
        import datasets

        try:
            ds = datasets.load_from_disk(str(root))
        except Exception as e:  # noqa: BLE001
            raise AblationError(f"{root}: cannot load the saved dataset ({type(e).__name__}: {e})") from None
        if isinstance(ds, datasets.DatasetDict):
            keys = list(ds)
            key = split or ("validation" if "validation" in ds else "test" if "test" in ds else keys[0])
            if key not in ds:
                raise AblationError(f"{root}: no split {key!r} (it has {keys})")
            ds = ds[key]
        return _hf(ds, image_column, label_column, size, mean, std, str(root))
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise AblationError(f"{root}: no class subfolders (ImageFolder layout: {root}/<class>/<image>)")
    items = []
    for k, c in enumerate(classes):
        for p in sorted((root / c).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMG_EXT:
                items.append((str(p), k))
    if not items:
        raise AblationError(f"{root}: no images in the class folders (extensions {', '.join(IMG_EXT)})")
    return _FolderImages(items, size, mean, std), classes


def _hf(ds, image_col, label_col, size, mean, std, name) -> tuple:
    cols = list(ds.column_names)
    for c, what in ((image_col, "image"), (label_col, "label")):
        if c not in cols:
            raise AblationError(f"{name}: no {what} column {c!r} (columns: {cols}); use --{what}-column")
    feat = ds.features.get(label_col)
    names = list(getattr(feat, "names", []) or [])
    if not names:
        labels = sorted({int(x) for x in ds[label_col]})
        names = [str(i) for i in range(max(labels) + 1)] if labels else []
    return _HFImages(ds, image_col, label_col, size, mean, std, name), names


# ---------------------------------------------------------------------------- ablation
@dataclass
class AblationResult:
    """Per class: images, correct before / after; ``units`` 1-based; ``mode``; ``layer``."""

    layer: str
    units: list
    mode: str
    classes: list
    images: np.ndarray  # int64 [C]
    correct_before: np.ndarray  # int64 [C]
    correct_after: np.ndarray  # int64 [C]
    settings: dict = field(default_factory=dict)

    def rows(self) -> list:
        out = []
        for k, name in enumerate(self.classes):
            n = int(self.images[k])
            b = self.correct_before[k] / n if n else float("nan")
            a = self.correct_after[k] / n if n else float("nan")
            out.append(
                {
                    "class_index": k,
                    "class": name,
                    "images": n,
                    "accuracy_before": float(b),
                    "accuracy_after": float(a),
                    "change": float(a - b),
                }
            )
        n = int(self.images.sum())
        b, a = self.correct_before.sum() / max(n, 1), self.correct_after.sum() / max(n, 1)
        out.append(
            {
                "class_index": "",
                "class": "(all)",
                "images": n,
                "accuracy_before": float(b),
                "accuracy_after": float(a),
                "change": float(a - b),
            }
        )
        return out

    def csv_text(self) -> str:
        buf = io.StringIO(newline="")
        w = csv.writer(buf, lineterminator="\n")
        cols = ["class_index", "class", "images", "accuracy_before", "accuracy_after", "change"]
        w.writerow(cols)
        for r in self.rows():
            w.writerow([r[c] if not isinstance(r[c], float) else repr(r[c]) for c in cols])
        return buf.getvalue()

    @property
    def tag(self) -> str:
        us = "_".join(str(u) for u in self.units[:8]) + (
            f"_and{len(self.units) - 8}more" if len(self.units) > 8 else ""
        )
        return f"ablation_units_{us}_{self.mode}"

    def write(self, layer_dir: Union[str, Path]) -> Path:
        """Write ``<tag>.csv`` into the layer's result folder and list it in ``ablations.json``
        (which the report reads to link each unit to the ablations that include it).

        Holds the lock of the results folder (``layer_dir``'s parent) for the read-modify-write of
        ablations.json, so two ablations of one layer both stay listed; the csv and the
        json are committed together. Raises DissectError for an ablations.json that is not a JSON
        list (never dropped silently) and LockedError while another process writes there."""
        from ..results import commit_files, results_lock

        d = Path(layer_dir)
        with results_lock(d.parent, "dissect ablate"):
            path = d / f"{self.tag}.csv"
            index_path = d / "ablations.json"
            try:
                index = json.loads(index_path.read_text("utf-8")) if index_path.is_file() else []
            except (ValueError, OSError) as e:
                raise DissectError(
                    f"{index_path}: cannot read the list of ablations ({e}); move it aside to start a new one"
                ) from None
            if not isinstance(index, list) or not all(isinstance(e, dict) for e in index):
                raise DissectError(
                    f"{index_path}: must be a JSON list of ablation entries; move it aside to start a new one"
                )
            index = [e for e in index if e.get("file") != path.name]
            total = self.rows()[-1]
            index.append(
                {
                    "file": path.name,
                    "units": list(self.units),
                    "mode": self.mode,
                    "layer": self.layer,
                    "accuracy_before": total["accuracy_before"],
                    "accuracy_after": total["accuracy_after"],
                    "settings": self.settings,
                }
            )
            commit_files(d, {path.name: self.csv_text(), "ablations.json": json.dumps(index, indent=1) + "\n"})
        return path


class _Replace:
    """Forward hook that replaces units (dim 1) of a layer's output by ``values`` [len(units)]."""

    def __init__(self, units: torch.Tensor):
        self.units, self.active = units, False
        self.values: Optional[torch.Tensor] = None  # set before the hook is registered

    def __call__(self, module, inp, out):
        if not self.active:
            return None
        t = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(t, torch.Tensor) or t.dim() < 2:
            raise AblationError(f"the layer's output is {type(t).__name__}, not a [batch, units, ...] tensor")
        if int(self.units.max()) >= t.shape[1]:
            raise AblationError(f"unit {int(self.units.max()) + 1} is out of range: the layer has {t.shape[1]} units")
        t = t.clone()
        shape = (1, -1) + (1,) * (t.dim() - 2)
        t[:, self.units] = self.values.to(t.device, t.dtype).view(shape).expand_as(t[:, self.units])
        if isinstance(out, tuple):
            return (t,) + tuple(out[1:])
        if isinstance(out, list):
            return [t] + list(out[1:])
        return t


def _unit_means(model: nn.Module, target: nn.Module, idx: torch.Tensor, loader, dev, quiet: bool) -> torch.Tensor:
    """Each unit's mean output over the whole data set and all positions (float32 [len(idx)])."""
    from broden_builder.shared import progress

    acc: dict = {"sum": None, "count": 0}

    def grab(module, inp, out):
        t = out[0] if isinstance(out, (tuple, list)) else out
        if int(idx.max()) >= t.shape[1]:
            raise AblationError(f"unit {int(idx.max()) + 1} is out of range: the layer has {t.shape[1]} units")
        s = t[:, idx.to(t.device)].double().transpose(0, 1).reshape(len(idx), -1)
        acc["sum"] = s.sum(1) if acc["sum"] is None else acc["sum"] + s.sum(1)
        acc["count"] += s.shape[1]

    handle = target.register_forward_hook(grab)
    try:
        with torch.no_grad():
            for batch in progress(
                loader, quiet, desc="ablate: unit means", unit="batch", per_unit=loader.batch_size, leave=False
            ):
                model(batch.image.to(dev))
    finally:
        handle.remove()
    return (acc["sum"] / max(acc["count"], 1)).float().cpu()


def _accuracies(model: nn.Module, hook: "_Replace", loader, n_classes: int, classes, dev, quiet: bool) -> tuple:
    """(images, correct without, correct with the replacement) per class, int64 [C] each."""
    from broden_builder.shared import progress

    n, before, after = (np.zeros(n_classes, np.int64) for _ in range(3))
    with torch.no_grad():
        for batch in progress(loader, quiet, desc="ablate", unit="batch", per_unit=loader.batch_size, leave=False):
            x = batch.image.to(dev)
            yn = batch.label.numpy().astype(np.int64)
            if yn.size and (yn.min() < 0 or yn.max() >= n_classes):
                raise AblationError(
                    f"label {int(yn.max() if yn.max() >= n_classes else yn.min())} is outside the "
                    f"{n_classes} classes {list(classes)[:5]}..."
                )
            hook.active = False
            logits = _logits(model(x))
            if logits.shape[1] < n_classes:  # class k is scored as output k: more classes cannot be right
                raise AblationError(
                    f"the data has {n_classes} classes ({', '.join(map(str, list(classes)[:5]))}"
                    f"{' ...' if n_classes > 5 else ''}) but the model has {logits.shape[1]} outputs; "
                    f"class k (in sorted folder order) is scored as output k"
                )
            p0 = logits.argmax(1).cpu().numpy()
            hook.active = True
            p1 = _logits(model(x)).argmax(1).cpu().numpy()
            hook.active = False
            np.add.at(n, yn, 1)
            np.add.at(before, yn, (p0 == yn).astype(np.int64))
            np.add.at(after, yn, (p1 == yn).astype(np.int64))
    return n, before, after


def ablate(
    model: nn.Module,
    layer: str,
    units: Sequence[int],
    data: Dataset,
    classes: Sequence[str],
    mode: str = "zero",
    batch_size: int = 32,
    workers: int = 0,
    device="cpu",
    quiet: bool = True,
) -> AblationResult:
    """Per-class accuracy of ``model`` on ``data`` with and without ``units`` (1-based, as in
    tally.csv) of ``layer``. Raises AblationError for bad units, mode or labels."""
    from ..capture import get_layer
    from ..engine import batch_loader, dist_info, resolve_device

    if mode not in MODES:
        raise AblationError(f"mode must be one of {MODES}, got {mode!r}")
    units = sorted({int(u) for u in units})
    if not units or units[0] < 1:
        raise AblationError(f"units are 1-based (as in tally.csv) and at least one is needed, got {units}")
    if units[-1] > 2**31 - 1:  # checked against the layer's width on the first batch; here before torch sees it
        raise AblationError(f"unit {units[-1]} is out of range (no layer has that many units)")
    dev = resolve_device(str(device), dist_info())  # as a dissection reads --device (auto, cpu, cuda, ...)
    model = model.to(dev).eval()
    target = get_layer(model, layer)
    idx = torch.tensor([u - 1 for u in units], dtype=torch.long)
    loader = batch_loader(_Labelled(data), batch_size, workers)  # the engine's batches (dissect.engine.Batch)
    hook = _Replace(idx)
    hook.values = _unit_means(model, target, idx, loader, dev, quiet) if mode == "mean" else torch.zeros(len(units))
    handle = target.register_forward_hook(hook)
    try:
        n, before, after = _accuracies(model, hook, loader, len(classes), classes, dev, quiet)
    finally:
        handle.remove()
    return AblationResult(
        layer,
        units,
        mode,
        list(classes),
        n,
        before,
        after,
        settings={"images": int(n.sum()), "batch_size": batch_size, "values": [float(v) for v in hook.values.tolist()]},
    )


def _logits(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise AblationError(f"the model must return logits [batch, classes]; got {getattr(out, 'shape', type(out))}")
    return out


def top_units_for_concept(layer_dir: Union[str, Path], concept: str, k: int) -> list:
    """The k units (1-based) with the highest IoU for the label named ``concept`` in a result
    folder (iou.npy + result.json); ties go to the lower unit. Raises AblationError."""
    d = Path(layer_dir)
    try:
        res = load_result(d, load_maps=False)
    except ResultsError as e:
        raise AblationError(f"{e}; run `dissect run` first") from None
    iou = res.iou
    names = [lab.get("name") for lab in res.labels]
    cols = [i for i, nm in enumerate(names) if nm == concept]
    if not cols:
        import difflib

        near = difflib.get_close_matches(concept, [n for n in names if n], n=5)
        raise AblationError(f"{d}: no concept {concept!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
    col = iou[:, cols].max(1)
    if k < 1:
        raise AblationError(f"k must be >= 1, got {k}")
    order = sorted(range(len(col)), key=lambda u: (-float(col[u]), u))
    if k > len(col):
        logging.getLogger(__name__).warning(
            "--k %d: the layer has %d units; all of them are ablated, ordered by their IoU with %r",
            k,
            len(col),
            concept,
        )
    weak = [u for u in order[:k] if float(col[u]) < res.iou_threshold]
    if weak:
        logging.getLogger(__name__).warning(
            "%d of the %d units ablated for %r are below the IoU threshold with it (not %s detectors)",
            len(weak),
            min(k, len(col)),
            concept,
            concept,
        )
    return [u + 1 for u in order[:k]]


__all__ = [
    "ablate",
    "open_data",
    "result_preprocessing",
    "top_units_for_concept",
    "AblationResult",
    "AblationError",
    "MODES",
]
