"""Dissecting the layers people use, end to end: results that do not depend on the other layers
requested, every call and output tensor addressable, transformer tokens on the patch grid.

Oracles: np.quantile of activations computed by calling the submodules by hand (no hooks); a
constructed ViT whose unit equals a label mask on the patch grid (IoU exactly 1); identical files
from runs that differ only in the other layers requested.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from broden_builder import BrodenDataset, BrodenStore
from conftest import build_synthetic
from dissect.cli import main
from dissect.capture._hooks import CallCountError
from dissect.config import DissectConfig
from dissect.errors import DissectError
from dissect.engine._runner import dissect_model
from dissect.capture._selectors import SelectorError
from test_capture import FPNLike, Shared, block_bn2_by_hand, block_net

Q = 0.05
CFG = DissectConfig(workers=0, device="cpu", quiet=True, batch_size=4, checkpoint_every=0, quantile=Q, top_k=3)


@pytest.fixture(scope="module")
def store12(tmp_path_factory):
    out = tmp_path_factory.mktemp("layers") / "store"
    build_synthetic(out, count=12, size=32, seg=16)
    return out


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    np.testing.assert_array_equal(a.iou, b.iou)
    for k in ("topk_indices", "topk_values", "topk_maps"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


def test_basicblock_layer_alone_and_with_later_layers(store12, tmp_path):
    m = block_net()
    alone = dissect_model(m, ["block.bn2"], store12, CFG)["block.bn2"]
    both = dissect_model(m, ["block.bn2", "block", "block2"], store12, CFG)["block.bn2"]
    assert alone.thresholds.tobytes() == both.thresholds.tobytes()  # bit-identical
    _same(alone, both)
    # the oracle: bn2 by hand (same batches), rounded like the cache, np.quantile per unit
    ds = BrodenDataset(BrodenStore(store12), with_labels=False)
    acts = torch.cat([block_bn2_by_hand(m, torch.stack([ds[i]["image"] for i in range(s, min(s + 4, len(ds)))]))
                      for s in range(0, len(ds), 4)])
    acts = acts.to(torch.float16).float().numpy()
    want = np.array([np.quantile(acts[:, u].ravel(), 1 - Q) for u in range(acts.shape[1])]).astype(np.float32)
    np.testing.assert_array_equal(alone.thresholds, want)
    assert alone.settings["selector"] == "block.bn2" and alone.settings["calls"] == 1


def test_calls_and_selectors_through_the_runner(store12, tmp_path):
    m = block_net()
    with pytest.raises(CallCountError, match=r"'block\.relu' is called 2 times.*'block\.relu#2'"):
        dissect_model(m, ["block.relu"], store12, CFG)
    r = dissect_model(m, ["block.relu#2", "block"], store12, CFG, out=tmp_path / "o")
    _same(r["block.relu#2"], r["block"])  # the block's last op is its ReLU's second call
    doc = json.loads((tmp_path / "o" / "block.relu_2" / "result.json").read_text())
    assert doc["settings"]["selector"] == "block.relu#2" and doc["settings"]["calls"] == 2
    with pytest.raises(CallCountError, match=r"'shared' is called 2 times"):
        dissect_model(Shared(), ["shared"], store12, CFG)
    f = FPNLike().eval()
    with pytest.raises(SelectorError, match=r"choose one: 'backbone:p2'"):
        dissect_model(f, ["backbone"], store12, CFG)
    with pytest.raises(SelectorError, match=r"'pair:0'"):
        dissect_model(f, ["pair"], store12, CFG)
    r = dissect_model(f, ["backbone:p3", "attn"], store12, CFG, out=tmp_path / "f")
    doc = json.loads((tmp_path / "f" / "attn" / "result.json").read_text())
    assert doc["settings"]["selector"] == "attn:0" and doc["settings"]["structure"] == "tuple"
    assert r["backbone:p3"].settings["layer_shape"] == [5, 4, 4]  # 32 input, strides 4 and 2
    with pytest.raises(DissectError, match="share the result folder"):
        dissect_model(f, ["pair:1", "pair#1"], store12, CFG)


# ----------------------------------------------------------------------------- ViT on the patch grid
GRID, PATCH, N_IMAGES = 4, 8, 12


def _square_grids():
    rng = np.random.default_rng(11)
    grids = rng.random((N_IMAGES, GRID, GRID)) < 0.3
    grids[0] = False  # one image without the label
    grids[1, 0, 0] = True
    return grids


@pytest.fixture(scope="module")
def square_store(tmp_path_factory):
    """Gray images, white exactly on some 8 x 8 patches, labelled 'square' there. Segmentation at the
    image size, so the label planes are not resampled (the build's corner-aligned zoom would move
    block edges off the patch grid)."""
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict
    from broden_builder.sources import register_source
    from broden_builder.sources.base import ImageRecord, Resolved, Source

    grids = _square_grids()

    @register_source("test-patch-squares")
    class PatchSquares(Source):
        prefix = "squares"
        license = "generated by the test"

        def vocabulary(self) -> dict:
            return {"object": {1: ("square",)}}

        def image_level_categories(self) -> frozenset:
            return frozenset()

        def records(self) -> list:
            return [ImageRecord(f"sq_{i:03d}", {"i": i}) for i in range(N_IMAGES)]

        def resolve(self, record: ImageRecord) -> Resolved:
            mask = np.kron(grids[record.meta["i"]], np.ones((PATCH, PATCH), bool))
            img = np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
            return Resolved(image=img, pixel={"object": [mask.astype(np.int32)]})

    recipe = recipe_from_dict({"name": "squares", "size": GRID * PATCH, "segmentation_size": GRID * PATCH, "min_frequency": 1,
                               "min_coverage": 0.0, "color": False, "sources": [{"type": "test-patch-squares"}]})
    out = tmp_path_factory.mktemp("squares") / "store"
    build_store(recipe, out, workers=1, quiet=True)
    return out


def constructed_vit():
    """A two-block torchvision ViT whose unit 0 is each patch's mean red value and whose blocks are
    identities (attention and MLP outputs zeroed, no position embedding, zero class token)."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.VisionTransformer(image_size=GRID * PATCH, patch_size=PATCH, num_layers=2, num_heads=2,
                                             hidden_dim=8, mlp_dim=16).eval()
    with torch.no_grad():
        m.conv_proj.weight.zero_()
        m.conv_proj.weight[0, 0] = 1.0 / PATCH ** 2
        m.conv_proj.bias.zero_()
        m.class_token.zero_()
        m.encoder.pos_embedding.zero_()
        for layer in m.encoder.layers:
            layer.self_attention.out_proj.weight.zero_()
            layer.self_attention.out_proj.bias.zero_()
            layer.mlp[3].weight.zero_()
            layer.mlp[3].bias.zero_()
    return m


def test_vit_unit_equal_to_label_on_patch_grid_scores_iou_one(square_store, tmp_path):
    grids = _square_grids()
    n = grids.size
    n_low = n - int(grids.sum())
    # threshold halfway between the last 'off' patch and the first 'on' one (numpy's linear rule)
    q = 1 - (n_low - 0.5) / (n - 1)
    layer = "encoder.layers.encoder_layer_1"
    cfg = CFG.replace(quantile=q, upsample="nearest")
    res = dissect_model(constructed_vit(), [layer], square_store, cfg, out=tmp_path / "vit")[layer]
    lay = res.settings["layout"]
    assert (lay["kind"], lay["grid"], lay["prefix"]) == ("tokens", [GRID, GRID], 1)
    assert "torchvision VisionTransformer" in lay["source"]
    assert res.settings["captured_shape"] == [1, 1 + GRID * GRID, 8] and res.settings["layer_shape"] == [8, GRID, GRID]
    col = [l["name"] for l in res.labels].index("square")
    assert res.iou[0, col] == pytest.approx(1.0, abs=1e-12)
    assert res.units[0]["label"] == "square" and res.units[0]["detector"]
    # a wrong grid (forced channels-first reading of the same tokens) cannot be scored as maps
    with pytest.raises(Exception, match="4 dimensions"):
        dissect_model(constructed_vit(), [layer], square_store, cfg.replace(layout="nchw"))


# ----------------------------------------------------------------------------- the CLI
CLI = ["--device", "cpu", "--batch-size", "4", "--workers", "0", "--quiet", "--top-k", "3", "--no-report",
       "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def store64(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "store"
    build_synthetic(out, count=12, size=64, seg=32)
    return out


def _same_files(a, b) -> None:
    for name in ("iou.npy", "thresholds.npy"):
        assert np.load(a / name).tobytes() == np.load(b / name).tobytes(), name
    with np.load(a / "topk.npz") as za, np.load(b / "topk.npz") as zb:
        for k in ("indices", "values", "maps"):
            np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    assert (a / "tally.csv").read_text() == (b / "tally.csv").read_text()


def test_cli_resnet18_bn2_alone_and_with_layer2(store64, tmp_path, capsys):
    base = ["run", "--store", str(store64), "--model", "resnet18", "--weights", "none"] + CLI
    assert main(base + ["--out", str(tmp_path / "a"), "--layer", "layer1.0.bn2"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--layer", "layer1.0.bn2", "--layer", "layer2"]) == 0
    _same_files(tmp_path / "a" / "layer1.0.bn2", tmp_path / "b" / "layer1.0.bn2")
    out = capsys.readouterr().out
    assert "model resnet18: RANDOM weights (--weights none" in out
    doc = json.loads((tmp_path / "a" / "layer1.0.bn2" / "result.json").read_text())
    assert doc["model"]["random_weights"] is True and doc["settings"]["selector"] == "layer1.0.bn2"
    assert doc["settings"]["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    from dissect.report.html import header_notes

    notes = header_notes(doc)  # the report header states random weights and what was captured
    assert "Random weights" in notes and "Captured <code>layer1.0.bn2</code>" in notes and "layout nchw" in notes


def test_cli_errors_name_the_problem(store64, tmp_path, capsys):
    base = ["run", "--store", str(store64), "--out", str(tmp_path / "x")] + CLI
    assert main(base + ["--model", "resnet18", "--layer", "layer4"]) == 1
    err = capsys.readouterr().err
    assert "say which weights" in err and "DEFAULT" in err and "'none'" in err
    assert main(base + ["--model", "resnet18", "--weights", "none", "--layer", "layer1.0.relu"]) == 1
    err = capsys.readouterr().err
    assert "called 2 times" in err and "layer1.0.relu#2" in err and "--input-size" not in err
    assert main(base + ["--model", "vit_b_16", "--weights", "none", "--layer", "encoder", "--input-size", "64"]) == 1
    err = capsys.readouterr().err
    assert "fails on input size 64x64" in err and "choose another --input-size" in err


def test_cli_timm_and_hf_vit(store64, tmp_path, capsys, monkeypatch):
    pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = ["run", "--store", str(store64)] + CLI
    assert main(base + ["--out", str(tmp_path / "t"), "--model", "timm:resnet18", "--weights", "none",
                        "--layer", "layer3"]) == 0
    doc = json.loads((tmp_path / "t" / "layer3" / "result.json").read_text())
    assert doc["model"]["kind"] == "timm" and "pretrained_cfg" in doc["settings"]["preprocessing"]["model"]
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16,
                                 num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    vit = transformers.ViTModel(cfg)
    vit.save_pretrained(tmp_path / "hfvit")
    transformers.ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(tmp_path / "hfvit")
    block = next(n for n, mod in vit.named_modules() if type(mod).__name__ == "ViTLayer" and n.endswith("1"))
    assert main(base + ["--out", str(tmp_path / "h"), "--model", f"hf:{tmp_path / 'hfvit'}", "--layer", block]) == 0
    doc = json.loads((tmp_path / "h" / block / "result.json").read_text())
    assert doc["settings"]["layout"]["kind"] == "tokens" and doc["settings"]["layout"]["grid"] == [4, 4]
    assert doc["settings"]["input_size"] == [32, 32]  # the model's size, not the store's 64
    assert doc["settings"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert "layout tokens 1+4x4" in capsys.readouterr().out


def test_transform_and_model_preprocessing_are_used_and_recorded(store12):
    """transform=Normalize(m, s) gives the same activations as mean=m, std=s (the dataset's own
    normalisation): the oracle is the run with explicit settings; both are recorded."""
    import torchvision.transforms.v2 as T

    m = block_net()
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.3, 0.25)
    explicit = dissect_model(m, ["block.bn2"], store12, CFG.replace(mean=mean, std=std))["block.bn2"]
    tf = dissect_model(m, ["block.bn2"], store12, CFG.replace(transform=T.Normalize(mean, std)))["block.bn2"]
    np.testing.assert_allclose(tf.thresholds, explicit.thresholds, rtol=2e-3, atol=2e-3)  # float16 cache rounding
    assert "Normalize" in tf.settings["preprocessing"]["transform"]
    assert explicit.settings["preprocessing"]["mean"] == [0.3, 0.4, 0.5]
    with pytest.raises(DissectError, match="transform must be callable"):
        CFG.replace(transform=3)
