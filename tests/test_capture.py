"""Capturing layers: copies taken at the call, call counts, output selectors, layouts, model loaders.

Oracles: the same tensors computed by calling the submodules by hand (no hooks), numbers of calls
known from the model's construction, and shapes/layouts written down from the architecture.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from dissect.capture._plan import feature_maps, plan_layers
from dissect.capture._hooks import TraceDict, UnknownLayerError, list_layers, probe_layers
from dissect.capture._layouts import Layout, LayoutError, detect_layout, infer_token_grid
from dissect.capture._selectors import CallCountError, Selector, SelectorError, parse_selector


# ----------------------------------------------------------------------------- models
class BasicBlockLike(nn.Module):
    """torchvision's BasicBlock: in-place ReLU module called twice, ``out += identity`` in place."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class BlockNet(nn.Module):
    def __init__(self, c: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=4, padding=1)
        self.block = BasicBlockLike(c)
        self.block2 = BasicBlockLike(c)

    def forward(self, x):
        return self.block2(self.block(self.stem(x)))


def block_net() -> BlockNet:
    torch.manual_seed(0)
    m = BlockNet()
    for mod in m.modules():  # non-trivial batch-norm statistics so bn2 is not near zero
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-1, 1)
    return m.eval()


def block_bn2_by_hand(m: BlockNet, x: torch.Tensor) -> torch.Tensor:
    """block.bn2's output without hooks: the block's submodules called in order (not in place)."""
    with torch.no_grad():
        s = m.stem(x)
        b = m.block
        return b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(s)))))


class Shared(nn.Module):
    """One conv applied twice (weight sharing): the module runs twice per forward pass."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.shared(torch.relu(self.shared(self.stem(x))))


class FPNLike(nn.Module):
    """A backbone returning a dict of two levels, a pair module returning a tuple of two tensors,
    and an attention-like module returning (tensor, None)."""

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.c2 = nn.Conv2d(3, 4, 3, stride=4, padding=1)
            self.c3 = nn.Conv2d(4, 5, 3, stride=2, padding=1)

        def forward(self, x):
            p2 = self.c2(x)
            return {"p2": p2, "p3": self.c3(p2)}

    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x - 1

    class Attn(nn.Module):
        def forward(self, x):
            return x + 1, None

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.backbone = self.Backbone()
        self.pair = self.Pair()
        self.attn = self.Attn()

    def forward(self, x):
        f = self.backbone(x)
        a, b = self.pair(f["p3"])
        c, _ = self.attn(a + b)
        return c


# ----------------------------------------------------------------------------- capture copies
def test_capture_is_a_copy_at_the_call():
    m = block_net()
    x = torch.randn(2, 3, 32, 32)
    want = block_bn2_by_hand(m, x)
    alone = feature_maps(m, x, plan_layers(m, ["block.bn2"], x[:1]))["block.bn2"]
    later = feature_maps(m, x, plan_layers(m, ["block.bn2", "block", "block2"], x[:1]))["block.bn2"]
    assert torch.equal(alone, want) and torch.equal(later, want)
    # the fault being fixed: a view of bn2's output is rewritten by `out += identity` and the in-place ReLU
    with torch.no_grad(), TraceDict(m, ["block.bn2", "block2"], clone=False) as td:
        m(x)
    assert not torch.equal(td["block.bn2"], want)


def test_module_called_twice_is_refused_and_selectable():
    m = block_net()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(CallCountError, match=r"'block\.relu' is called 2 times.*'block\.relu#1', 'block\.relu#2'"):
        plan_layers(m, ["block.relu"], x)
    plans = plan_layers(m, ["block.relu#1", "block.relu#2"], x)
    assert plans["block.relu#2"].calls == 2 and plans["block.relu#2"].selector == "block.relu#2"
    got = feature_maps(m, x, plans)
    with torch.no_grad():
        first = torch.relu(m.block.bn1(m.block.conv1(m.stem(x))))
        final = m.block(m.stem(x))
    assert torch.equal(got["block.relu#1"], first) and torch.equal(got["block.relu#2"], final)
    with pytest.raises(CallCountError, match=r"no call #3 \(use #1\.\.#2\)"):
        plan_layers(m, ["block.relu#3"], x)
    s = Shared()
    with pytest.raises(CallCountError, match=r"'shared' is called 2 times"):
        plan_layers(s, ["shared"], x)
    got = feature_maps(s, x, plan_layers(s, ["shared#1", "shared#2"], x))
    with torch.no_grad():
        a = s.shared(s.stem(x))
        assert torch.equal(got["shared#1"], a) and torch.equal(got["shared#2"], s.shared(torch.relu(a)))


def test_not_called_and_unknown():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv2d(3, 2, 1)
            self.spare = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.used(x)

    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(CallCountError, match="'spare' is not called during the forward pass"):
        plan_layers(Unused(), ["spare"], x)
    with pytest.raises(UnknownLayerError, match="nearest names: used"):
        plan_layers(Unused(), ["usde"], x)


# ----------------------------------------------------------------------------- structured outputs
def test_dict_tuple_selectors():
    m = FPNLike().eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(SelectorError, match=r"dict holding 2 tensors; choose one: 'backbone:p2' \(1x4x8x8\), "
                                            r"'backbone:p3' \(1x5x4x4\)"):
        plan_layers(m, ["backbone"], x[:1])
    with pytest.raises(SelectorError, match=r"tuple holding 2 tensors.*'pair:0'.*'pair:1'"):
        plan_layers(m, ["pair"], x[:1])
    with pytest.raises(SelectorError, match=r"keys \['p2', 'p3'\]: no key 'p9'"):
        plan_layers(m, ["backbone:p9"], x[:1])
    plans = plan_layers(m, ["backbone:p3", "pair:1", "attn"], x[:1])
    assert plans["attn"].selector == "attn:0" and plans["attn"].structure == "tuple"  # the only tensor
    assert plans["backbone:p3"].structure == "dict" and plans["backbone:p3"].shape == (5, 4, 4)
    got = feature_maps(m, x, plans)
    with torch.no_grad():
        p3 = m.backbone.c3(m.backbone.c2(x))
    assert torch.equal(got["backbone:p3"], p3) and torch.equal(got["pair:1"], p3 - 1)
    assert torch.equal(got["attn"], (p3 * 2 + (p3 - 1)) + 1)


def test_parse_selector():
    assert parse_selector("layer1.0.relu#2") == Selector("layer1.0.relu", 2)
    assert parse_selector("encoder:last_hidden_state") == Selector("encoder", None, ("last_hidden_state",))
    assert str(parse_selector("head#3:0:logits")) == "head#3:0:logits"
    assert parse_selector("odd:name", ["odd:name"]) == Selector("odd:name")
    for bad, msg in [("relu#0", "counted from 1"), ("relu#x", "call number"), ("a::b", "empty key"), ("", "empty")]:
        with pytest.raises(SelectorError, match=msg):
            parse_selector(bad)


# ----------------------------------------------------------------------------- layouts
def test_detect_layout_shapes():
    assert detect_layout((1, 64, 56, 56), (224, 224)).kind == "nchw"
    assert detect_layout((1, 56, 56, 96), (224, 224)).kind == "nhwc"  # Swin stage 1
    assert detect_layout((1, 7, 7, 768), (224, 224)).kind == "nhwc"
    assert detect_layout((1, 1000), (224, 224)).kind == "vector"
    lay = detect_layout((1, 197, 768), (224, 224))
    assert (lay.kind, lay.grid, lay.prefix) == ("tokens", (14, 14), 1) and "inferred" in lay.source
    assert infer_token_grid(261, (224, 224)) == (16, 16, 5)  # DINOv2-style: class + 4 registers at patch 14
    assert detect_layout((1, 56, 56, 96), (224, 224), force="nchw").kind == "nchw"
    with pytest.raises(LayoutError, match="layout tokens needs 3 dimensions"):
        detect_layout((1, 8, 4, 4), (32, 32), force="tokens", name="x")
    with pytest.raises(LayoutError, match="its 23 tokens form no patch grid"):
        detect_layout((1, 23, 8), (32, 32), name="x")
    with pytest.raises(LayoutError, match="unknown layout"):
        detect_layout((1, 8, 4, 4), (32, 32), force="hwc")
    # the permutations, against explicit indexing
    t = torch.arange(2 * 5 * 6 * 3, dtype=torch.float32).reshape(2, 5, 6, 3)
    nchw = Layout("nhwc").apply(t)
    assert nchw.shape == (2, 3, 5, 6) and nchw[1, 2, 4, 5] == t[1, 4, 5, 2]
    tok = torch.randn(2, 1 + 2 * 3, 4)
    maps = Layout("tokens", (2, 3), 1).apply(tok)
    assert maps.shape == (2, 4, 2, 3) and maps[1, 3, 1, 2] == tok[1, 1 + 1 * 3 + 2, 3]


def _tv_vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=16, mlp_dim=32).eval()


def test_torchvision_vit_tokens_from_model_grid():
    m = _tv_vit()
    x = torch.randn(2, 3, 32, 32)
    plans = plan_layers(m, ["encoder.layers.encoder_layer_1"], x[:1])
    p = plans["encoder.layers.encoder_layer_1"]
    assert p.layout.kind == "tokens" and p.layout.grid == (4, 4) and p.layout.prefix == 1
    assert "patch_size 8" in p.layout.source and p.shape == (16, 4, 4) and p.captured_shape == (1, 17, 16)
    got = feature_maps(m, x, plans)["encoder.layers.encoder_layer_1"]
    with torch.no_grad():  # by hand: patchify, class token, position embedding, two blocks
        t = m._process_input(x)
        t = torch.cat([m.class_token.expand(2, -1, -1), t], 1) + m.encoder.pos_embedding
        t = m.encoder.layers.encoder_layer_1(m.encoder.layers.encoder_layer_0(t))
    want = t[:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
    assert torch.equal(got, want)


def test_hf_vit_tokens():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16,
                                 num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    m = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    names = [n for n, mod in m.named_modules() if type(mod).__name__ == "ViTLayer"]
    assert len(names) == 2
    x = torch.randn(1, 3, 32, 32)
    p = plan_layers(m, [names[1]], x)[names[1]]
    assert (p.layout.kind, p.layout.grid, p.layout.prefix) == ("tokens", (4, 4), 1) and "Hugging Face" in p.layout.source
    with torch.no_grad():
        full = m(x).last_hidden_state
    # the last layer's output, before the final layernorm: checked against the model output's shape/grid
    assert p.captured_shape == tuple(full.shape)


def test_timm_resnet_layers():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("resnet18", pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    plans = plan_layers(m, ["layer1.0.bn2", "layer4", "layer1.0.act2"], x)
    assert plans["layer4"].shape == (512, 2, 2) and plans["layer1.0.bn2"].shape == (64, 16, 16)
    xb = torch.randn(2, 3, 64, 64)
    # timm's BasicBlock also adds the shortcut in place and applies an in-place ReLU (act2)
    alone = feature_maps(m, xb, plan_layers(m, ["layer1.0.bn2"], x))["layer1.0.bn2"]
    together = feature_maps(m, xb, plans)["layer1.0.bn2"]
    with torch.no_grad():
        b = m.layer1[0]
        stem = m.maxpool(m.act1(m.bn1(m.conv1(xb))))
        want = b.bn2(b.conv2(b.act1(b.bn1(b.conv1(stem)))))
    assert torch.equal(alone, want) and torch.equal(together, want)
    rows = {r.name: r for r in list_layers(m, (64, 64))}
    assert rows["layer4"].shape == (1, 512, 2, 2) and rows["layer4"].calls == 1


def test_list_layers_rows():
    m = torchvision.models.resnet18(weights=None)
    rows = {r.name: r for r in list_layers(m, (64, 96))}
    assert rows["layer4"].shape == (1, 512, 2, 3) and rows["conv1"].shape == (1, 64, 32, 48)
    assert rows["fc"].shape == (1, 1000) and rows["fc"].tensors[0][2] == "vector"
    assert rows["layer1.0.relu"].calls == 2 and rows["layer1.0.conv1"].calls == 1
    f = {r.name: r for r in list_layers(FPNLike().eval(), (32, 32))}
    assert f["backbone"].structure == "dict" and [t[0] for t in f["backbone"].tensors] == ["backbone:p2", "backbone:p3"]
    assert f["attn"].structure == "tuple" and [t[0] for t in f["attn"].tensors] == ["attn:0"]
    v = {r.name: r for r in list_layers(_tv_vit(), (32, 32))}
    assert v["encoder.layers.encoder_layer_0"].tensors[0][2] == "tokens 1+4x4"
    assert sum(len(x._forward_hooks) for x in m.modules()) == 0


def test_probe_survives_a_head_that_fails_after_the_layers():
    class HeadFails(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.head = nn.Linear(2 * 8 * 8, 3)  # fits 8 x 8 inputs only

        def forward(self, x):
            return self.head(self.conv(x).flatten(1))

    p = probe_layers(HeadFails(), torch.zeros(1, 3, 16, 16), ["conv"])
    assert p["conv"].tensor.shape == (1, 2, 16, 16)
