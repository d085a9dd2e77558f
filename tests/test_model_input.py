"""One model input (issue 23: "explain and ablate use the engine's model input instead of their own
loops"): pass 1, ``explain --model`` and ``ablate`` share dissect.engine._model_input.

Oracles: the source (who loads images, builds DataLoaders and runs the capture), hand-computed
pixel values, and a plain reference written here (PIL resize, the normalisation formula, a forward
hook on the layer) for the activations ``explain`` computes again.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from broden_builder import BrodenStore
from broden_builder.torch_dataset import IMAGENET_MEAN, IMAGENET_STD, normalise, rgb_array

REPO = Path(__file__).resolve().parents[1]
OWN_LOOPS = ("DataLoader", "feature_maps", "plan_layers", "collate_broden", "BrodenDataset", "convert")


def _names_used(path: Path) -> set:
    """Every name and attribute name ``path`` calls or imports."""
    tree = ast.parse(path.read_text("utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None))
        elif isinstance(node, ast.ImportFrom):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("path", ["explain/run.py", "explain/layer.py", "tools/_ablate.py"])
def test_explain_and_ablate_have_no_loops_of_their_own(path):
    """No DataLoader, image decoding, layer planning or capture of their own: the engine's."""
    used = _names_used(REPO / "dissect" / path)
    assert not used & set(OWN_LOOPS), sorted(used & set(OWN_LOOPS))
    assert "batch_loader" in used or "image_batches" in used or "label_batches" in used


def test_pass1_and_explain_run_the_same_forward():
    """ModelForward (the capture) and cache_rounded (the cache's rounding) serve both pass 1 and explain."""
    for path in ("engine/_runner.py", "explain/run.py"):
        used = _names_used(REPO / "dissect" / path)
        assert {"ModelForward", "cache_rounded", "plan_model"} <= used, path


def test_pixels_by_hand():
    """rgb_array + normalise: (v / 255 - mean) / std per channel, values computed by hand."""
    arr = np.array([[[255, 0, 51], [0, 255, 102]]], dtype=np.uint8)  # 1 x 2 RGB
    im = Image.fromarray(arr)
    got = normalise(rgb_array(im), torch.tensor([0.5, 0.0, 0.2]).view(3, 1, 1), torch.tensor([0.5, 1.0, 0.2]).view(3, 1, 1))
    want = [[[1.0, -1.0]], [[0.0, 1.0]], [[0.0, 1.0]]]  # R: (1-.5)/.5, (0-.5)/.5; G: 0, 1; B: (.2-.2)/.2, (.4-.2)/.2
    assert got.shape == (3, 1, 2)
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    assert rgb_array(Image.fromarray(np.zeros((4, 6, 3), np.uint8)), (2, 3)).shape == (2, 3, 3)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).amax((2, 3)))


def test_explain_activations_equal_a_plain_forward(synthetic_store, tmp_path):
    """model_activations (engine's images, batches, forward, rounding) = PIL resize + the
    normalisation formula + a forward hook on ``conv``, rounded to float16."""
    from dissect.explain.run import model_activations

    store = BrodenStore(synthetic_store)
    rows = [0, 3, 5, 7, 8]
    net = _Net().eval()
    got = np.asarray(model_activations(net, "conv", store, rows, tmp_path / "a.npy", input_size=(32, 32),
                                       batch_size=2, dtype="float16"))
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    seen = []
    h = net.conv.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        for r in rows:
            with Image.open(store.image_path(r)) as im:
                px = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float64) / 255.0
            x = torch.tensor(((px - mean) / std).transpose(2, 0, 1)[None], dtype=torch.float32)
            net(x)
    h.remove()
    want = torch.cat(seen).half().numpy()
    assert got.shape == (5, 5, 16, 16) and got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=2e-3, rtol=2e-3)


def test_batches_are_dataclasses(synthetic_store):
    """image_batches / label_batches yield Batch(index [B], image [B, 3, H, W] / seg), in row order."""
    from dissect.engine import Batch, image_batches, label_batches

    store = BrodenStore(synthetic_store)
    b = next(iter(image_batches(store, [4, 2, 9], (16, 16), IMAGENET_MEAN, IMAGENET_STD, 2, 0)))
    assert isinstance(b, Batch) and b.index.tolist() == [4, 2] and b.image.shape == (2, 3, 16, 16)
    s = next(iter(label_batches(store, [4, 2, 9], ["object"], 3, 0)))
    assert isinstance(s, Batch) and s.index.tolist() == [4, 2, 9] and s.image is None
    assert set(s.seg.pixel) == {"object"}


def test_ablation_data_become_batches_with_labels():
    """A classifier's (image, label) items reach the model as Batch(image, label) in item order."""
    from dissect.engine import batch_loader
    from dissect.tools._ablate import _Labelled

    data = [(torch.full((3, 2, 2), float(k)), k % 3) for k in range(5)]
    batches = list(batch_loader(_Labelled(data), 2, 0))
    assert [b.label.tolist() for b in batches] == [[0, 1], [2, 0], [1]]
    assert [b.index.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[1].image[:, 0, 0, 0].tolist() == [2.0, 3.0]
