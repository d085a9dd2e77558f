"""Model specs: weights are never chosen silently; timm:, hf:, torch.export .pt2; preprocessing recorded.

Oracles: the same architecture built directly by timm / transformers / torchvision with the same
state, compared tensor for tensor; the preprocessing values written in the model's own config.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dissect.capture._plan import feature_maps, plan_layers
from dissect.capture._models import MissingWeightsError, ModelLoadError, load_model


def test_torchvision_name_needs_weights():
    with pytest.raises(MissingWeightsError, match=r"resnet18: say which weights.*DEFAULT, IMAGENET1K_V1.*"
                                                  r"checkpoint path.*'none'"):
        load_model("resnet18")
    lm = load_model("resnet18", "none")
    assert lm.random_weights and "RANDOM" in lm.weights_text()
    assert load_model("resnet18", require_weights=False).random_weights  # dissect layers only lists modules
    with pytest.raises(ModelLoadError, match=r"unknown weights 'IMAGENET9K'; choose one of \['DEFAULT', 'IMAGENET1K_V1'\]"):
        load_model("resnet18", "IMAGENET9K")
    vit = load_model("vit_b_16", "none")
    assert vit.preprocessing["input_size"] == [224, 224]  # a ViT runs at its image size only


def test_offline_torchvision_weights_name_the_file_torch_looks_for(tmp_path, monkeypatch):
    """No network (urlopen fails as on a node without DNS): the error names torch hub's file,
    $TORCH_HOME/hub/checkpoints/<file of the URL> (resnet18 IMAGENET1K_V1: resnet18-f37072fd.pth,
    torchvision's published URL), and the --weights PATH form; the file put there then loads."""
    import os
    import urllib.error

    import torch.hub
    import torchvision

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    want = os.path.join(str(tmp_path / "th"), "hub", "checkpoints", "resnet18-f37072fd.pth")
    with pytest.raises(ModelLoadError) as e:
        load_model("resnet18", "IMAGENET1K_V1")
    msg = str(e.value)
    assert f"torch looks for {want}" in msg and "--weights /path/to/resnet18-f37072fd.pth" in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg and "TORCH_HOME" in msg
    # the file where the message says: loads offline, as the named weights
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    os.makedirs(os.path.dirname(want), exist_ok=True)
    torch.save(state, want)
    lm = load_model("resnet18", "IMAGENET1K_V1")
    assert torch.equal(lm.module.state_dict()["fc.weight"], state["fc.weight"])
    assert lm.identity["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    # and as --weights PATH
    assert torch.equal(load_model("resnet18", want).module.state_dict()["conv1.weight"], state["conv1.weight"])


def test_weights_help_documents_local_files():
    from dissect.cli import build_parser

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["run"].format_help().split())
    for part in ("--weights /path/to/resnet18-f37072fd.pth", "hub/checkpoints", "timm:NAME", "hf:FOLDER"):
        assert part in text


def test_file_py_weights_none_is_recorded_random(tmp_path):
    from dissect_helpers import TINY_MODEL_SOURCE

    (tmp_path / "tiny.py").write_text(TINY_MODEL_SOURCE)
    assert load_model(f"{tmp_path / 'tiny.py'}:tiny", "none").random_weights
    assert not load_model(f"{tmp_path / 'tiny.py'}:tiny").random_weights  # its own weights: not said random


def test_timm_models(tmp_path):
    timm = pytest.importorskip("timm")
    with pytest.raises(MissingWeightsError, match=r"timm:resnet18: say which weights.*'none'"):
        load_model("timm:resnet18")
    with pytest.raises(ModelLoadError, match=r"unknown timm model 'resnt18'.*resnet18"):
        load_model("timm:resnt18", "none")
    lm = load_model("timm:resnet18", "none")
    assert lm.kind == "timm" and lm.random_weights
    cfg = lm.module.pretrained_cfg
    assert lm.preprocessing["mean"] == list(cfg["mean"]) and lm.preprocessing["std"] == list(cfg["std"])
    assert "pretrained_cfg" in lm.preprocessing["source"]
    torch.manual_seed(5)
    other = timm.create_model("resnet18", pretrained=False)
    from safetensors.torch import save_file

    save_file(other.state_dict(), str(tmp_path / "model.safetensors"))  # timm hub checkpoints are safetensors
    lw = load_model("timm:resnet18", str(tmp_path / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(lw.module.state_dict().values(), other.state_dict().values()))
    assert not lw.random_weights and lw.identity["weights"]["sha256"]
    with pytest.raises(ModelLoadError, match="not a checkpoint file"):
        load_model("timm:resnet18", "IMAGENET1K_V1")


def _tiny_hf(folder):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16,
                                 num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(3)
    m = transformers.ViTModel(cfg).eval()
    m.save_pretrained(folder)
    transformers.ViTImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3],
                                   size={"height": 32, "width": 32}).save_pretrained(folder)
    return m


def test_hf_folder_and_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "vit"
    ref = _tiny_hf(folder)
    lm = load_model(f"hf:{folder}")
    assert lm.kind == "hf" and not lm.random_weights
    assert lm.preprocessing["mean"] == [0.5, 0.4, 0.3] and lm.preprocessing["std"] == [0.2, 0.25, 0.3]
    assert lm.preprocessing["input_size"] == [32, 32] and "image processor" in lm.preprocessing["source"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(lm.module(x).last_hidden_state, ref(x).last_hidden_state)
    plans = plan_layers(lm.module, ["layernorm"], x[:1])
    assert plans["layernorm"].layout.kind == "tokens" and plans["layernorm"].layout.grid == (4, 4)
    with torch.no_grad():
        want = ref(x).last_hidden_state[:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
    assert torch.equal(feature_maps(lm.module, x, plans)["layernorm"], want)
    rnd = load_model(f"hf:{folder}", "none")
    assert rnd.random_weights
    with pytest.raises(ModelLoadError, match=r"hf:nobody/no-such-model: not a local folder, and not in the local "
                                             r"Hugging Face cache.*huggingface-cli download"):
        load_model("hf:nobody/no-such-model")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(f"hf:{tmp_path / 'missing'}")
    json.dumps(lm.identity)  # recorded in result.json


def test_torch_export_program(tmp_path):
    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.b = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, x):
            return self.b(torch.relu(self.a(x))).mean((2, 3))

    m = Net().eval()
    ep = torch.export.export(m, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(ep, str(tmp_path / "net.pt2"))
    lm = load_model(str(tmp_path / "net.pt2"), unsafe_unpickle=True)
    assert lm.kind == "export" and lm.preprocessing["input_size"] == [32, 32]
    x = torch.randn(3, 3, 32, 32)
    got = feature_maps(lm.module, x, plan_layers(lm.module, ["b.0", "a"], x[:1]))
    with torch.no_grad():
        assert torch.allclose(got["b.0"], m.b[0](torch.relu(m.a(x))), atol=1e-5)
        assert torch.allclose(got["a"], m.a(x), atol=1e-5)
    fixed = torch.export.export(m, (torch.zeros(2, 3, 32, 32),))
    torch.export.save(fixed, str(tmp_path / "fixed.pt2"))
    with pytest.raises(ModelLoadError, match="fixed batch size 2; export it with a dynamic batch dimension"):
        load_model(str(tmp_path / "fixed.pt2"), unsafe_unpickle=True)
    with pytest.raises(ModelLoadError, match="carries its own weights"):
        load_model(str(tmp_path / "net.pt2"), "x.pth", unsafe_unpickle=True)
