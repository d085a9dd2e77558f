"""The segmenter source: a model's predictions as store labels (planted oracles, a tiny random SegFormer).

Oracles: the synthetic source's own native label planes (an oracle model returning them must give
the annotated store's planes pixel for pixel); thresholds and minimum areas computed here by hand,
pixel by pixel, from the planted scores; the sha256 of the saved weights file computed here.
"""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from broden_builder import BrodenStore
from broden_builder.build import BuildError, build_store
from broden_builder.errors import BrodenError
from broden_builder.recipe import recipe_from_dict
from broden_builder.resize import expand_sampled, resize_labels, sampled_indices
from broden_builder.sources.segmenter.labels import scores_at
from broden_builder.sources.synthetic.source import SyntheticSource

PIXEL = ("object", "part", "material")


def _build(out: Path, entry: dict, size: int = 64, seg: int = 32, **kw) -> BrodenStore:
    recipe = recipe_from_dict({"name": "t", "size": size, "segmentation_size": seg, "min_frequency": 1,
                               "min_coverage": 0.0, "color": False, "sources": [entry]})
    build_store(recipe, out, quiet=True, **kw)
    return BrodenStore(out)


def _names(store: BrodenStore, i: int, cat: str) -> np.ndarray:
    """Row i's first layer of ``cat`` as label names ('' unlabelled)."""
    layers = store.pixel_layers(i, cat)
    if not layers:
        return np.full((store.rows[i].sh, store.rows[i].sw), "", dtype=object)
    names = {l.number: l.name for l in store.labels}
    names[0] = ""
    return np.vectorize(names.get, otypes=[object])(layers[0])


def _rows(store: BrodenStore) -> dict:
    return {r.image.split("/", 1)[1]: i for i, r in enumerate(store.rows)}


ORACLE = '''
import hashlib, numpy as np, torch
class Oracle:
    exclusive = False
    def __init__(self):
        z = np.load({table!r}, allow_pickle=False)
        self.classes = [str(c) for c in z["classes"]]
        self.table = {{k: z[k] for k in z.files if k != "classes"}}
    def __call__(self, x):
        out = []
        for img in x:
            key = hashlib.sha1((img * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest()
            known = self.table.get("k" + key)  # an image the oracle does not know (the loader's probe): nothing
            out.append(torch.from_numpy(known).float() if known is not None else torch.zeros(len(self.classes), *img.shape[1:]))
        return torch.stack(out)
def make():
    return Oracle()
'''


def _key(rgb: np.ndarray) -> str:
    return "k" + hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def _plant_oracle(tmp: Path, images: dict, scores: dict, classes: list) -> str:
    """Write images (PNG, lossless) and an oracle file.py whose scores are looked up by image content."""
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    table = {"classes": np.array(classes)}
    for name, rgb in images.items():
        Image.fromarray(rgb).save(tmp / "images" / f"{name}.png")
        table[_key(rgb)] = scores[name].astype(np.float32)
    np.savez(tmp / "table.npz", **table)
    (tmp / "oracle.py").write_text(ORACLE.format(table=str(tmp / "table.npz")))
    return f"{tmp / 'oracle.py'}:make"


def _images_entry(kind: str, tmp: Path, syn: dict, images: dict):
    """The segmenter's ``images`` value of each kind, holding the same images under the same names."""
    if kind == "folder":
        return str(tmp / "oracle" / "images")
    if kind == "source":
        return {"source": dict(syn)}
    import datasets

    names = sorted(images)
    ds = datasets.Dataset.from_dict({"name": names, "picture": [Image.fromarray(images[n]) for n in names]},
                                    features=datasets.Features({"name": datasets.Value("string"),
                                                                "picture": datasets.Image()}))
    ds.save_to_disk(str(tmp / "saved_ds"))
    return {"dataset": str(tmp / "saved_ds"), "image_column": "picture", "id_column": "name"}


@pytest.mark.parametrize("kind", ["folder", "dataset", "source"])
def test_oracle_segmenter_gives_the_annotated_planes(tmp_path, kind):
    """An oracle model returning the synthetic source's true masks gives the annotated store's planes exactly,
    whether its images come from a folder, a saved Hugging Face dataset, or the synthetic source itself."""
    syn = {"type": "synthetic", "count": 16, "seed": 3, "native_size": 80}
    annotated = _build(tmp_path / "annotated", syn)
    src = SyntheticSource(syn, 64, 32)
    vocab = src.vocabulary()
    classes, cats = [], {}
    for cat in PIXEL:
        for code, names in sorted(vocab[cat].items()):
            classes.append(names[0] if isinstance(names, tuple) else names)
            cats[classes[-1]] = cat
    images, scores = {}, {}
    for rec in src.records():
        res = src.resolve(rec)
        images[rec.basename] = res.image
        s = np.zeros((len(classes),) + res.image.shape[:2], np.float32)
        for cat in PIXEL:
            plane = res.pixel[cat][0]
            for code, names in vocab[cat].items():
                s[classes.index(names[0] if isinstance(names, tuple) else names)] = plane == code
        scores[rec.basename] = s
    spec = _plant_oracle(tmp_path / "oracle", images, scores, classes)
    entry_images = _images_entry(kind, tmp_path, syn, images)
    predicted = _build(tmp_path / "predicted", {"type": "segmenter", "images": entry_images,
                                                "model": spec, "categories": {c: k for c, k in cats.items() if k != "object"}})
    ra, rp = _rows(annotated), _rows(predicted)
    assert sorted(ra) == sorted(rp) and len(ra) == 16
    labelled = 0
    for name in ra:
        for cat in PIXEL:
            a, p = _names(annotated, ra[name], cat), _names(predicted, rp[name], cat)
            assert a.shape == p.shape == (32, 32)
            assert (a == p).all(), f"{name} {cat}: {(a != p).sum()} pixels differ"
            labelled += int((a != "").sum())
    assert labelled > 1000
    info = json.loads((tmp_path / "predicted" / "build.json").read_text())
    assert set(info["predicted_labels"]) == {l.name for l in predicted.labels}
    assert all(v["models"][0]["masks"] == "predicted by a segmentation model, not annotated"
               for v in info["predicted_labels"].values())
    assert "predicted_labels" not in json.loads((tmp_path / "annotated" / "build.json").read_text())


def _ramp_scores(h: int, w: int) -> np.ndarray:
    """Class a: a left-to-right ramp 0..1; class b: 0.6 in a small square, else 0; class c: 0.3 in the bottom row band."""
    s = np.zeros((3, h, w), np.float32)
    s[0] = np.linspace(0, 1, w)[None, :]
    s[1, 4:8, 4:8] = 0.6
    s[2, h - 6:, :] = 0.3
    return s


def _expected(scores: np.ndarray, classes: list, threshold, min_area: float, seg: int) -> np.ndarray:
    """By hand: per pixel the best class if its score > 0 and >= its threshold, sampled as the store
    samples (row round(i*(H-1)/(S-1))), then classes below min_area of the S x S plane removed."""
    C, H, W = scores.shape
    idx = [int(i * (H - 1) / (seg - 1) + 0.5) for i in range(seg)]
    jdx = [int(j * (W - 1) / (seg - 1) + 0.5) for j in range(seg)]
    out = np.full((seg, seg), "", dtype=object)
    for a, r in enumerate(idx):
        for b, c in enumerate(jdx):
            k = int(np.argmax(scores[:, r, c]))
            t = threshold.get(classes[k], 0.0) if isinstance(threshold, dict) else threshold
            if scores[k, r, c] > 0 and scores[k, r, c] >= t:
                out[a, b] = classes[k]
    for name in classes:
        if 0 < (out == name).sum() < min_area * seg * seg:
            out[out == name] = ""
    return out


@pytest.mark.parametrize("threshold,min_area", [(0.0, 0.0), (0.5, 0.0), ({"a": 0.7, "c": 0.35}, 0.0), (0.0, 0.03)])
def test_threshold_and_min_area_change_exactly_their_pixels(tmp_path, threshold, min_area):
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"]
    images = {"one": rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)}
    scores = {"one": _ramp_scores(40, 52)}
    spec = _plant_oracle(tmp_path / "oracle", images, scores, classes)
    entry = {"type": "segmenter", "images": str(tmp_path / "oracle" / "images"), "model": spec,
             "threshold": threshold, "min_area": min_area}
    store = _build(tmp_path / "store", entry, size=32, seg=20)
    got = _names(store, 0, "object")
    want = _expected(scores["one"], classes, threshold, min_area, 20)
    assert (got == want).all(), f"{(got != want).sum()} pixels differ"
    if threshold or min_area:  # the option did something
        assert (want != _expected(scores["one"], classes, 0.0, 0.0, 20)).any()


def test_scores_are_read_as_the_upsampled_map(tmp_path):
    """scores_at equals torch's bilinear upsampling to the image, read at the sampled pixels."""
    torch.manual_seed(0)
    s = torch.rand(4, 13, 17)
    for H, W, S in ((100, 77, 32), (64, 64, 32), (13, 17, 8)):
        rows, cols = sampled_indices(H, S), sampled_indices(W, S)
        full = torch.nn.functional.interpolate(s[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        assert torch.allclose(scores_at(s, (H, W), rows, cols), full[:, rows][:, :, cols], atol=1e-5)


def test_sampled_indices_and_expansion_follow_the_store_rule():
    rng = np.random.default_rng(0)
    for H, W, S in ((100, 37, 32), (513, 700, 112), (64, 64, 32)):
        assert list(sampled_indices(H, S)) == [int(i * (H - 1) / (S - 1) + 0.5) for i in range(S)]
        p = rng.integers(0, 50, (S, S))
        assert (resize_labels(expand_sampled(p, H, W), S) == p).all()


def _tiny_segformer(folder: Path, classes: list) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    cfg = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
                          decoder_hidden_size=16, num_labels=len(classes),
                          id2label={i: c for i, c in enumerate(classes)}, label2id={c: i for i, c in enumerate(classes)})
    SegformerForSemanticSegmentation(cfg).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)


def test_tiny_random_segformer_end_to_end_with_provenance(tmp_path):
    classes = ["sky", "tree", "road", "grass"]
    _tiny_segformer(tmp_path / "segformer", classes)
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(6):
        shape = (48, 64, 3) if i % 2 else (70, 50, 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / "imgs" / ("sub" if i > 3 else "") / f"im{i}.jpg")
    entry = {"type": "segmenter", "images": str(tmp_path / "imgs"), "model": f"hf:{tmp_path / 'segformer'}",
             "categories": {"grass": "material"}, "batch_size": 2, "device": "cpu"}
    store = _build(tmp_path / "store", entry, size=32, seg=16)
    assert len(store) == 6
    assert {l.name for l in store.labels} <= set(classes)
    info = json.loads((tmp_path / "store" / "build.json").read_text())
    weights = hashlib.sha256((tmp_path / "segformer" / "model.safetensors").read_bytes()).hexdigest()
    for name, rec in info["predicted_labels"].items():
        m = rec["models"][0]
        assert m["sha256"] == weights and m["path"] == str((tmp_path / "segformer").resolve())
        assert m["config"]["model_type"] == "segformer" and m["config"]["num_labels"] == 4
        assert m["masks"] == "predicted by a segmentation model, not annotated" and m["threshold"] == 0.0
        assert rec["category"] == ("material" if name == "grass" else "object")
    (src,) = info["sources"]
    assert src["model"]["sha256"] == weights and src["classes"] == classes


BAD = '''
import torch
class Bad:
    classes = ["a", "b"]
    def __call__(self, x):
        return torch.zeros(x.shape[0], {channels}, x.shape[2], x.shape[3]){extra}
def make():
    return Bad()
'''


@pytest.mark.parametrize("channels,extra,msg", [(3, "", r"\[1, 2, h, w\]"), (2, "[0]", r"expected \[1, 2, h, w\]")])
def test_mismatched_output_refused_before_any_image(tmp_path, channels, extra, msg):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "bad.py").write_text(BAD.format(channels=channels, extra=extra))
    entry = {"type": "segmenter", "images": str(tmp_path / "imgs"), "model": f"{tmp_path / 'bad.py'}:make"}
    with pytest.raises(BrodenError, match=msg):
        _build(tmp_path / "store", entry, size=16, seg=8)
    assert not list((tmp_path / "store").rglob("*.jpg")) and not list((tmp_path / "store").rglob("*.png"))


def test_hub_id_not_cached_says_how_to_save_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    entry = {"type": "segmenter", "images": str(tmp_path / "imgs"), "model": "hf:nvidia/segformer-b0-finetuned-ade-512-512"}
    with pytest.raises(BrodenError) as e:
        _build(tmp_path / "store", entry, size=16, seg=8)
    lines = [line for line in str(e.value).splitlines() if "save_pretrained" in line]
    assert len(lines) == 1 and "nvidia/segformer-b0-finetuned-ade-512-512" in lines[0]


def test_unknown_class_in_options_is_one_line(tmp_path):
    classes = ["sky", "tree"]
    _tiny_segformer(tmp_path / "m", classes)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    entry = {"type": "segmenter", "images": str(tmp_path / "imgs"), "model": f"hf:{tmp_path / 'm'}", "drop": ["skye"]}
    with pytest.raises(BrodenError, match=r"'drop' names classes the model does not have: \['skye'\]"):
        _build(tmp_path / "store", entry, size=16, seg=8)


def test_predicted_labels_told_apart_in_stats_report_and_add(tmp_path, capsys):
    """broden stats and the dissection report name the model of predicted labels; broden add records them too."""
    from broden_builder.cli import main as broden
    from broden_builder.extend import add_source
    from conftest import build_synthetic
    from dissect.cli import main as dissect

    classes = ["sky", "tree", "road"]
    _tiny_segformer(tmp_path / "segformer", classes)
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"im{i}.png")
    spec = f"hf:{tmp_path / 'segformer'}"
    entry = {"type": "segmenter", "images": str(tmp_path / "imgs"), "model": spec, "device": "cpu"}
    store = _build(tmp_path / "store", entry, size=32, seg=16)
    assert broden(["stats", str(tmp_path / "store")]) == 0
    text = capsys.readouterr().out
    n = len(store.labels) - 1 if store.labels[0].number == 0 else len(store.labels)
    assert f"labels predicted by {spec}: {n} (object {n})" in text
    acts = rng.random((len(store), 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    assert dissect(["-q", "score", "--store", str(tmp_path / "store"), "--activations", str(tmp_path / "acts.npy"),
                    "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "acts" / "report.html").read_text("utf-8")
    assert f"label predicted by {spec} (segmentation model), not annotated" in page
    base = tmp_path / "syn"
    build_synthetic(base, count=8, size=32, seg=16, color=False)
    add_source(base, dict(entry, prefix="predicted"), quiet=True)
    info = json.loads((base / "build.json").read_text())
    assert info["predicted_labels"] and all(r["predicted_by"] == ["predicted"] for r in info["predicted_labels"].values())


def test_panoptic_mask2former_scores_match_its_semantic_post_processing(tmp_path):
    """A mask-classification model (tiny random Mask2Former): our per-class scores give, by argmax,
    what transformers' own post_process_semantic_segmentation gives."""
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)

    from broden_builder.sources.segmenter.models import IMAGENET_MEAN, IMAGENET_STD, load_segmenter

    torch.manual_seed(0)
    bb = SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
                    out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=bb, hidden_dim=32, mask_feature_size=32, feature_size=32, encoder_layers=1,
                            decoder_layers=2, num_queries=5, encoder_feedforward_dim=32, dim_feedforward=32,
                            num_attention_heads=2, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                            label2id={"a": 0, "b": 1, "c": 2}, use_pretrained_backbone=False)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    model.save_pretrained(tmp_path / "m2f")
    seg = load_segmenter(f"hf:{tmp_path / 'm2f'}")
    assert seg.classes == ["a", "b", "c"] and seg.exclusive
    x = torch.rand(2, 3, 64, 64)
    ours = torch.nn.functional.interpolate(seg.scores(x), size=(64, 64), mode="bilinear", align_corners=False).argmax(1)
    mean, std = torch.tensor(IMAGENET_MEAN)[None, :, None, None], torch.tensor(IMAGENET_STD)[None, :, None, None]
    with torch.no_grad():
        out = model(pixel_values=(x - mean) / std)
    theirs = Mask2FormerImageProcessor().post_process_semantic_segmentation(out, target_sizes=[(64, 64)] * 2)
    assert all(torch.equal(ours[i], theirs[i]) for i in range(2))


def test_workers_read_predictions_without_loading_the_model(tmp_path, monkeypatch):
    """After prepare(), a pickled copy (what a spawned worker gets) resolves from the stored predictions."""
    import pickle

    import broden_builder.sources.segmenter.source as source_mod
    from broden_builder.sources.segmenter import SegmenterSource

    rng = np.random.default_rng(2)
    images = {"one": rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)}
    spec = _plant_oracle(tmp_path / "oracle", images, {"one": _ramp_scores(40, 52)}, ["a", "b", "c"])
    src = SegmenterSource({"type": "segmenter", "images": str(tmp_path / "oracle" / "images"), "model": spec}, 32, 20)
    src.check()
    (rec,) = src.records()
    src.prepare([rec], tmp_path / "work")
    want = src.resolve(rec).pixel["object"][0]
    copy = pickle.loads(pickle.dumps(src))
    monkeypatch.setattr(source_mod, "load_segmenter", lambda *a: pytest.fail("a worker loaded the model"))
    got = copy.resolve(rec).pixel["object"][0]
    assert np.array_equal(got, want) and resize_labels(got, 20).shape == (20, 20)


def test_torchvision_checkpoint(tmp_path):
    """torchvision:NAME:CHECKPOINT: a random LR-ASPP MobileNetV3 saved as a state_dict; the weights'
    own class names (VOC, '__background__' first, never written); its softmax scores are the module's."""
    import torchvision

    from broden_builder.sources.segmenter import SegmenterSource
    from broden_builder.sources.segmenter.models import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    net = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None,
                                       num_classes=21).eval()
    torch.save(net.state_dict(), tmp_path / "lraspp.pth")
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    src = SegmenterSource({"type": "segmenter", "images": str(tmp_path / "imgs"), "device": "cpu",
                           "model": f"torchvision:lraspp_mobilenet_v3_large:{tmp_path / 'lraspp.pth'}"}, 32, 16)
    src.check()
    seg = src.segmenter()
    assert seg.classes[0] == "__background__" and "aeroplane" in seg.classes and len(seg.classes) == 21
    assert "__background__" not in {n for codes in src.vocabulary().values() for names in codes.values() for n in names}
    x = torch.rand(1, 3, 520, 520)  # already at the weights' resize size: no resize
    mean, std = torch.tensor(IMAGENET_MEAN)[None, :, None, None], torch.tensor(IMAGENET_STD)[None, :, None, None]
    with torch.no_grad():
        want = net((x - mean) / std)["out"].softmax(1)
    assert torch.allclose(seg.scores(x), want, atol=1e-5)
    assert seg.identity["sha256"] == hashlib.sha256((tmp_path / "lraspp.pth").read_bytes()).hexdigest()


@pytest.mark.parametrize("images,msg", [
    ({"source": {"type": "synthetic", "cout": 3}}, "images.source.cout: unknown key (did you mean 'count'?)"),
    ({"source": {"type": "segmenter", "images": "x", "model": "m.py:f"}}, "cannot itself be a segmenter source"),
    ({"dataset": "ds", "colum": "image"}, "images"),
])
def test_bad_images_value_is_one_line(images, msg):
    """A wrong ``images`` form is refused when the recipe is read, naming the key."""
    from broden_builder.recipe import RecipeError

    with pytest.raises(RecipeError) as e:
        recipe_from_dict({"name": "t", "sources": [{"type": "segmenter", "images": images, "model": "m.py:f"}]})
    assert msg in str(e.value) and "Traceback" not in str(e.value)


def test_a_store_folder_gives_its_photos_not_its_label_planes(tmp_path):
    """``images:`` pointing into a Broden store (its root, its images/ folder, or a folder inside that)
    takes the images index.csv lists: the label PNGs beside them are not photos. Oracle: the store's
    own image column, read plainly here."""
    import csv

    from broden_builder.sources.segmenter.images import FolderImages

    store = _build(tmp_path / "store", {"type": "synthetic", "count": 6, "seed": 2, "native_size": 64})
    with open(tmp_path / "store" / "index.csv", newline="") as f:
        listed = sorted(r["image"] for r in csv.DictReader(f))
    assert len(listed) == len(store.rows) == 6
    assert any(p.name.endswith("_object.png") for p in (tmp_path / "store" / "images").rglob("*.png"))
    strip = lambda name: name.rsplit(".", 1)[0]
    got = [r.basename for r in FolderImages(str(tmp_path / "store" / "images")).records()]
    assert got == [strip(i) for i in listed]
    sub = listed[0].split("/", 1)[0]
    got = [r.basename for r in FolderImages(str(tmp_path / "store" / "images" / sub)).records()]
    assert got == [strip(i.split("/", 1)[1]) for i in listed if i.startswith(sub + "/")]
    got = [r.basename for r in FolderImages(str(tmp_path / "store")).records()]
    assert got == [strip("images/" + i) for i in listed]
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.new("RGB", (8, 8)).save(plain / "a_object.png")  # outside a store every image file counts
    assert [r.basename for r in FolderImages(str(plain)).records()] == ["a_object"]


@pytest.mark.parametrize("category, says", [("color", "nor to color (the build's own per-pixel colour names"),
                                            ("scene", "not to scene or texture (one label per image"),
                                            ("texture", "not to scene or texture")])
def test_reserved_categories_are_refused_saying_why(tmp_path, category, says):
    """A class mapped to a category a model's masks cannot go to is refused with the reason, and the
    categories it may go to."""
    from broden_builder.sources import SourceDataError
    from broden_builder.sources.segmenter import SegmenterSource

    entry = {"type": "segmenter", "images": str(tmp_path), "model": "m.py:f", "categories": {"thing": category}}
    with pytest.raises(SourceDataError) as e:
        SegmenterSource(entry, 64, 32)
    assert says in str(e.value) and "object (the default), part, material or a new category" in str(e.value)
