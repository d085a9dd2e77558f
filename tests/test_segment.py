"""Top-unit masks on new images equal upsample(act) > T_k computed by hand."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from dissect.tools._segment import preprocess, unit_masks


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 1)).eval()


def test_masks_match_a_hand_computation():
    net = _net()
    rgb = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(2)]
    x = preprocess(rgb, size=32)
    assert x.shape == (2, 3, 32, 32)
    # oracle: the normalisation written out, then the layer by plain forward
    t = torch.from_numpy(rgb[0]).permute(2, 0, 1).float()[None] / 255
    t = torch.nn.functional.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(x[:1], (t - mean) / std, atol=1e-6)
    with torch.no_grad():
        acts = net(x)  # [2, 6, 8, 8]
    thr = np.array([np.quantile(acts[:, u].numpy(), 0.9) for u in range(6)], dtype=np.float32)
    masks = unit_masks(net, "2", x, thr, units=[4, 1])
    assert masks.shape == (2, 2, 32, 32) and masks.dtype == torch.bool
    for j, u in enumerate([4, 1]):
        up = torch.nn.functional.interpolate(acts[:, u:u + 1], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        assert torch.equal(masks[:, j], up > float(thr[u]))
    assert masks.any() and not masks.all()


def test_bad_thresholds_and_units():
    net = _net()
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="6 units but"):
        unit_masks(net, "2", x, np.zeros(5))
    with pytest.raises(ValueError, match="0..5"):
        unit_masks(net, "2", x, np.zeros(6), units=[6])
