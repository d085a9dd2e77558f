"""Model loading (checkpoints, file.py:function, TorchScript), hooks, BrodenDataset, the cache key."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from broden_builder import BrodenDataset, BrodenStore, collate_broden
from conftest import build_synthetic
from dissect.capture._hooks import Trace, TraceDict, UnknownLayerError, get_layer, list_layers
from dissect.capture._models import ModelLoadError, load_model
from dissect_helpers import TINY_MODEL_SOURCE


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("mh") / "store"
    build_synthetic(out, count=12, size=32, seg=16)
    return out


def _resnet_state(seed=3):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "module_prefix", "state_dict_module_prefix"])
def test_checkpoint_variants_load(tmp_path, wrap):
    sd = _resnet_state()
    obj = {("module." + k if "module" in wrap else k): v for k, v in sd.items()}
    if wrap.startswith("state_dict"):
        obj = {"state_dict": obj, "epoch": 3}
    path = tmp_path / "ck.pth"
    torch.save(obj, path)
    lm = load_model("resnet18", str(path))
    got = lm.module.state_dict()
    assert set(got) == set(sd)
    for k in sd:
        assert torch.equal(got[k], sd[k]), k
    assert lm.identity["weights"]["sha256"]
    assert not lm.module.training


class Extra:  # an arbitrary object in a checkpoint: refused by weights_only=True
    pass


def test_checkpoint_unsafe_pickle_needs_opt_in(tmp_path):
    path = tmp_path / "ck.pth"
    torch.save({"state_dict": _resnet_state(), "extra": Extra()}, path)
    with pytest.raises(ModelLoadError, match="--unsafe-unpickle"):
        load_model("resnet18", str(path))
    lm = load_model("resnet18", str(path), unsafe_unpickle=True)
    assert torch.equal(lm.module.state_dict()["fc.weight"], _resnet_state()["fc.weight"])


def test_checkpoint_mismatch_and_bad_weights(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="missing keys"):
        load_model("resnet18", str(tmp_path / "bad.pt"))
    with pytest.raises(ModelLoadError, match="unknown weights 'IMAGENET9K'"):
        load_model("resnet18", "IMAGENET9K")
    with pytest.raises(ModelLoadError, match="resnet18"):
        load_model("resnet81")


def test_random_init_is_reproducible():
    a = load_model("resnet18", "none").module.state_dict()
    b = load_model("resnet18", "none").module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_python_and_torchscript_models(tmp_path):
    (tmp_path / "m.py").write_text(TINY_MODEL_SOURCE)
    lm = load_model(f"{tmp_path / 'm.py'}:tiny")
    assert lm.kind == "python" and type(lm.module).__name__ == "Tiny"
    with pytest.raises(ModelLoadError, match="no function 'nope'"):
        load_model(f"{tmp_path / 'm.py'}:nope")
    ts = torch.jit.script(lm.module)
    torch.jit.save(ts, str(tmp_path / "m.ts"))
    lt = load_model(str(tmp_path / "m.ts"))
    assert lt.is_torchscript
    rows = list_layers(lt.module, (64, 64))
    assert [(r.name, r.calls, r.structure, r.tensors) for r in rows] == [("output", 1, "tensor", [("output", (1, 3), "vector")])]
    torch.save(_resnet_state(), tmp_path / "sd.pt")
    with pytest.raises(ModelLoadError, match="not a TorchScript file"):
        load_model(str(tmp_path / "sd.pt"))


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        y = self.b(self.a(x))
        raise RuntimeError("boom after b")


def _n_hooks(m: nn.Module) -> int:
    return sum(len(x._forward_hooks) for x in m.modules())


def test_hooks_removed_on_exception_and_stop():
    m = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        with TraceDict(m, ["a", "b"]) as td:
            m(torch.zeros(1, 3, 4, 4))
    assert _n_hooks(m) == 0 and td["b"].shape == (1, 2, 4, 4)
    with TraceDict(m, ["a"], stop=True) as td:  # stop: the forward pass ends before the exception
        m(torch.zeros(1, 3, 4, 4))
    assert _n_hooks(m) == 0 and torch.equal(td["a"], m.a(torch.zeros(1, 3, 4, 4)).detach())
    with Trace(m, "b", stop=True) as t:
        m(torch.ones(1, 3, 2, 2))
    assert t.output.shape == (1, 2, 2, 2) and _n_hooks(m) == 0
    with pytest.raises(UnknownLayerError):
        with TraceDict(m, ["a", "c"]):
            pass
    assert _n_hooks(m) == 0


def test_unknown_layer_lists_nearest_names():
    m = torchvision.models.resnet18(weights=None)
    with pytest.raises(UnknownLayerError) as e:
        get_layer(m, "layer3.1.conv3")
    msg = str(e.value)
    assert "layer3.1.conv2" in msg and "layer3.1.conv1" in msg
    with pytest.raises(UnknownLayerError, match="layer4"):
        get_layer(m, "layer9")


def test_list_layers_shapes():
    m = torchvision.models.resnet18(weights=None)
    rows = {r.name: r.shape for r in list_layers(m, (64, 96))}
    assert rows["layer4"] == (1, 512, 2, 3) and rows["conv1"] == (1, 64, 32, 48) and rows["fc"] == (1, 1000)
    assert _n_hooks(m) == 0


def test_broden_dataset_and_collate(small_store):
    store = BrodenStore(small_store)
    ds = BrodenDataset(store, categories=["scene", "object"], image_size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    item = ds[3]
    assert item["index"] == 3 and item["image"].shape == (3, 24, 24)
    ref = np.asarray(Image.open(store.image_path(3)).convert("RGB").resize((24, 24), Image.BILINEAR), np.float32) / 255
    ref = (ref - 0.5) / np.array([0.25, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    batch = collate_broden([ds[i] for i in range(5)])
    seg = batch["seg"]
    assert batch["image"].shape == (5, 3, 24, 24) and batch["index"].tolist() == [0, 1, 2, 3, 4]
    assert set(seg.pixel) == {"object"} and set(seg.image_level) == {"scene"}
    for b in range(5):
        layers = store.pixel_layers(b, "object")
        for j, layer in enumerate(layers):
            assert np.array_equal(seg.pixel["object"][b, j].numpy(), layer)
        assert (seg.pixel["object"][b, len(layers):] == 0).all()
        scenes = store.image_labels(b, "scene")
        assert seg.image_level["scene"][b, :len(scenes)].tolist() == scenes
        assert (seg.image_level["scene"][b, len(scenes):] == 0).all()
    with pytest.raises(ValueError, match="no image has split 'test'"):
        BrodenDataset(store, split="test")
    with pytest.raises(ValueError, match="no category"):
        BrodenDataset(store, categories=["animal"])


def test_cache_key_mismatch_is_not_reused(small_store, tmp_path, caplog):
    from dissect import DissectConfig, dissect_model

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU())
    cache = tmp_path / "cache"
    cfg = DissectConfig(workers=0, device="cpu", quiet=True, cache_dir=str(cache), batch_size=5)
    r1 = dissect_model(m, ["0"], small_store, cfg, out=tmp_path / "a")["0"]
    side = (cache / "0.rank0of1.json").read_text()
    with caplog.at_level(logging.WARNING, logger="dissect.engine._cache"):
        r2 = dissect_model(m, ["0"], small_store, cfg.replace(mean=(0.4, 0.4, 0.4)), out=tmp_path / "b")["0"]
    assert "different mean" in caplog.text
    assert (cache / "0.rank0of1.json").read_text() != side
    assert not np.array_equal(r1.thresholds, r2.thresholds)
    with torch.no_grad():
        m[0].weight.mul_(2)  # other weights: the state hash differs, the cache is rebuilt
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dissect.engine._cache"):
        r3 = dissect_model(m, ["0"], small_store, cfg, out=tmp_path / "c")["0"]
    assert "model; not reusing it" in caplog.text
    assert not np.array_equal(r1.thresholds, r3.thresholds)
