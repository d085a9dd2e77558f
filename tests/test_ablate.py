"""Unit ablation against a model whose class logits each depend on one unit (hand-computed oracle)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from dissect.tools._ablate import AblationError, ablate, open_data, top_units_for_concept

COLORS = {"a_red": (255, 0, 0), "b_green": (50, 255, 0), "c_blue": (0, 0, 255)}  # folder order = logit order


def _folder(root, per_class=(3, 2, 4)):
    for (name, rgb), n in zip(COLORS.items(), per_class):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), rgb).save(root / name / f"{i}.png")
    return root


def _run(data_path, units, mode, **kw):
    ds, classes = open_data(str(data_path), (8, 8), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), **kw)
    return ablate(ColorNet(), "features", units, ds, classes, mode=mode, batch_size=4)


def test_zeroing_the_green_unit_only_hurts_green(tmp_path):
    res = _run(_folder(tmp_path / "data"), [2], "zero")
    assert res.classes == ["a_red", "b_green", "c_blue"]  # ImageFolder order: sorted folder names
    rows = {r["class"]: r for r in res.rows()}
    assert all(rows[c]["accuracy_before"] == 1.0 for c in COLORS)
    # green images (50, 255, 0) then give logits (50/255, 0, 0): class a_red, so every one is wrong
    assert rows["b_green"]["accuracy_after"] == 0.0 and rows["b_green"]["change"] == -1.0
    assert rows["a_red"]["change"] == 0.0 and rows["c_blue"]["change"] == 0.0
    assert rows["(all)"]["images"] == 9 and rows["(all)"]["change"] == pytest.approx(-2 / 9)


def test_mean_ablation_uses_the_data_mean(tmp_path):
    # the green unit is 1 on the 5 green images and 0 on the 3 + 4 others: mean 5 / 12
    res = _run(_folder(tmp_path / "data", per_class=(3, 5, 4)), [2], "mean")
    assert res.settings["values"] == [pytest.approx(5 / 12)]
    rows = {r["class"]: r for r in res.rows()}
    # green images: logits (50/255 = 0.196, 5/12 = 0.417, 0) -> still green; zeroing would break them
    assert rows["b_green"]["change"] == 0.0 and rows["(all)"]["change"] == 0.0
    zero = {r["class"]: r for r in _run(tmp_path / "data", [2], "zero").rows()}
    assert zero["b_green"]["change"] == -1.0


def test_hf_dataset_on_disk_gives_the_same_result(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = _folder(tmp_path / "data")
    names = sorted(COLORS)
    images, labels = [], []
    for k, name in enumerate(names):
        for p in sorted((folder / name).glob("*.png")):
            images.append(Image.open(p).convert("RGB"))
            labels.append(k)
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    datasets.Dataset.from_dict({"img": images, "label": labels}, features=feats).save_to_disk(str(tmp_path / "hf"))
    a = _run(folder, [2], "zero")
    b = _run(tmp_path / "hf", [2], "zero", image_column="img")
    assert a.csv_text() == b.csv_text()
    with pytest.raises(AblationError, match="no image column 'image'"):
        _run(tmp_path / "hf", [2], "zero")


def test_write_lists_the_ablation_for_the_report(tmp_path):
    res = _run(_folder(tmp_path / "data"), [2, 3], "zero")
    path = res.write(tmp_path / "out" / "features")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == ["a_red", "b_green", "c_blue", "(all)"]
    index = json.loads((tmp_path / "out" / "features" / "ablations.json").read_text())
    assert index[0]["units"] == [2, 3] and index[0]["file"] == path.name


def test_bad_inputs(tmp_path):
    folder = _folder(tmp_path / "data")
    with pytest.raises(AblationError, match="out of range"):
        _run(folder, [4], "zero")
    with pytest.raises(AblationError, match="1-based"):
        _run(folder, [0], "zero")
    with pytest.raises(AblationError, match="does not exist"):
        open_data(str(tmp_path / "nope"), (8, 8), (0, 0, 0), (1, 1, 1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AblationError, match="no class subfolders"):
        open_data(str(tmp_path / "empty"), (8, 8), (0, 0, 0), (1, 1, 1))


def _write_result(d, iou: np.ndarray, names: list) -> None:
    """A whole result folder (dissect.results writes it) whose iou.npy is ``iou`` [U, L]; only the
    IoUs and the label names matter to --concept."""
    from dissect.results import LayerResult, write_layer_result

    units = [{"unit_index": i, "unit": i + 1, "label": "", "category": "", "iou": 0.0, "detector": False}
             for i in range(len(iou))]
    labels = [{"number": i + 1, "name": n} for i, n in enumerate(names)]
    write_layer_result(d, LayerResult("layer", iou, np.zeros(len(iou), np.float32), labels, units,
                                      {"per_category": {}}))


def test_top_units_for_concept(tmp_path):
    d = tmp_path / "layer"
    _write_result(d, np.array([[0.1, 0.5], [0.3, 0.2], [0.3, 0.0], [0.0, 0.9]], np.float32), ["sky", "tree"])
    assert top_units_for_concept(d, "sky", 2) == [2, 3]  # tie at 0.3: lower unit first
    assert top_units_for_concept(d, "tree", 1) == [4]
    with pytest.raises(AblationError, match="did you mean sky"):
        top_units_for_concept(d, "skye", 1)


def test_top_units_for_concept_says_when_k_outruns_the_detectors(tmp_path, caplog):
    """--k beyond the layer's units, or reaching units below the IoU threshold (0.04 by default) for
    the concept, is said, not silently taken."""
    import logging

    d = tmp_path / "layer"
    _write_result(d, np.array([[0.1, 0.5], [0.3, 0.2], [0.03, 0.0], [0.0, 0.9]], np.float32), ["sky", "tree"])
    with caplog.at_level(logging.WARNING):
        assert top_units_for_concept(d, "sky", 9) == [2, 1, 3, 4]
    said = [r.getMessage() for r in caplog.records]
    assert "--k 9: the layer has 4 units; all of them are ablated, ordered by their IoU with 'sky'" in said
    assert "2 of the 4 units ablated for 'sky' are below the IoU threshold with it (not sky detectors)" in said
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert top_units_for_concept(d, "sky", 2) == [2, 1]
    assert not caplog.records


COLORNET_SOURCE = '''
import torch
from torch import nn


class ColorNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.features.bias.zero_()

    def forward(self, x):
        return self.features(x).mean((2, 3))


def colornet():
    return ColorNet()
'''
# the model of these tests, from the same text the file-loaded model is written from:
# features = 1x1 conv = identity on RGB (units 1, 2, 3 = red, green, blue); logits[k] = mean of unit k + 1
_ns: dict = {}
exec(compile(COLORNET_SOURCE, "colornet.py", "exec"), _ns)
ColorNet = _ns["ColorNet"]


def test_ablate_cli(tmp_path, capsys):
    from dissect.cli import main

    folder = _folder(tmp_path / "data")
    (tmp_path / "colornet.py").write_text(COLORNET_SOURCE)
    out = tmp_path / "out"
    args = ["ablate", "--model", f"{tmp_path / 'colornet.py'}:colornet", "--layer", "features", "--data", str(folder),
            "--out", str(out), "--input-size", "8", "--mean", "0,0,0", "--std", "1,1,1", "--quiet"]
    assert main(args + ["--units", "2"]) == 0
    text = capsys.readouterr().out
    assert "b_green: 1.000 -> 0.000 (-1.000)" in text
    rows = list(csv.DictReader(open(out / "features" / "ablation_units_2_zero.csv", newline="")))
    assert {r["class"]: float(r["change"]) for r in rows} == {"a_red": 0.0, "b_green": -1.0, "c_blue": 0.0,
                                                             "(all)": pytest.approx(-2 / 9)}
    # --concept reads the layer's dissection results
    _write_result(out / "features", np.array([[0.0], [0.0], [0.7]], np.float32), ["blue-c"])
    assert main(args + ["--concept", "blue-c", "--k", "1"]) == 0
    assert "highest IoU for 'blue-c': 3" in capsys.readouterr().out
    assert main(args + ["--units", "x"]) in (1, 2)
    assert "--units" in capsys.readouterr().err


def test_report_lines_for_units(tmp_path):
    from dissect.report.analyses import unit_extras

    d = tmp_path / "layer4"
    d.mkdir()
    (d / "explanations.csv").write_text("unit,formula,iou,single_iou,single_label,length\n"
                                        "1,sky OR <cloud>,0.5,0.25,sky,2\n2,,0.0,0.0,,0\n")
    (d / "ablations.json").write_text(json.dumps([{"file": "ablation_units_1_3_zero.csv", "units": [1, 3],
                                                   "mode": "zero", "accuracy_before": 0.75, "accuracy_after": 0.5}]))
    extras = unit_extras(d)
    assert "sky OR &lt;cloud&gt;" in extras[1] and "IoU 0.500" in extras[1]
    assert 'href="ablation_units_1_3_zero.csv"' in extras[1] and "0.750 &rarr; 0.500" in extras[3]
    assert 2 not in extras
    assert unit_extras(tmp_path / "nothing") == {}


def test_ablate_cli_uses_the_recorded_preprocessing(tmp_path, capsys):
    """A dissection recorded mean 0, std 1 at 8 px: ablate feeds the same. With ImageNet's mean/std
    (the old default) the greyish red (130, 120, 110) reads as blue: red (0.5098 - 0.485) / 0.229 = 0.1087
    < blue (0.4314 - 0.406) / 0.225 = 0.1127, so the red class would score 0 instead of 1."""
    from dissect.cli import main

    r = (130 / 255 - 0.485) / 0.229
    b = (110 / 255 - 0.406) / 0.225
    assert b > r  # the hand computation above: ImageNet normalisation flips the class
    root = tmp_path / "data"
    for name, rgb in (("a_red", (130, 120, 110)), ("b_green", (0, 255, 0)), ("c_blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), rgb).save(root / name / "0.png")
    (tmp_path / "colornet.py").write_text(COLORNET_SOURCE)
    out = tmp_path / "out"
    (out / "features").mkdir(parents=True)
    prep = {"input_size": [8, 8], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "transform": None}
    (out / "features" / "result.json").write_text(json.dumps({"settings": {"preprocessing": prep}, "units": []}))
    args = ["ablate", "--model", f"{tmp_path / 'colornet.py'}:colornet", "--layer", "features", "--data", str(root),
            "--out", str(out), "--units", "3", "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "preprocessing: 8x8, mean 0,0,0, std 1,1,1 from the dissection's" in text
    rows = list(csv.DictReader(open(out / "features" / "ablation_units_3_zero.csv", newline="")))
    assert float(rows[0]["accuracy_before"]) == 1.0  # a_red right with the dissection's preprocessing
    # an explicit setting that differs from the dissection's is refused, naming both
    assert main(args + ["--mean", "0.485,0.456,0.406"]) == 1
    err = capsys.readouterr().err
    assert "mean (0.485, 0.456, 0.406) differs from the dissection's (0.0, 0.0, 0.0)" in err
    # a dissection made with a transform cannot be repeated from the command line
    prep["transform"] = "Normalize()"
    (out / "features" / "result.json").write_text(json.dumps({"settings": {"preprocessing": prep}, "units": []}))
    assert main(args) == 1 and "dissected with a transform" in capsys.readouterr().err
