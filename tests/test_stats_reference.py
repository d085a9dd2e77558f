"""dissect.stats against a plain, slow reference (numpy loops over images, units and labels)
and against hand-computed numbers."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import dissect.stats.tally as tally_mod
from dissect.stats import SegBatch, Tally, TopKImages, TopQuantile, scores, upsample

UNIONS = ("original", "lite", "all")


# --------------------------------------------------------------------------- reference
def reference_counts(acts, thr, segs, labels, primary, categories, image_level):
    """Plain loops. segs[b][cat] = list of 2-D layers (pixel) or list of numbers (image-level)."""
    B, U, sh, sw = acts.shape
    L, C = len(labels), len(categories)
    I = np.zeros((U, L), np.int64)
    G = np.zeros(L, np.int64)
    Ao = np.zeros((U, C), np.int64)
    Al = np.zeros((U, C), np.int64)
    Aa = np.zeros(U, np.int64)
    for b in range(B):
        lmask = []
        for n in labels:
            m = np.zeros((sh, sw), bool)
            for cat in categories:
                if cat in image_level:
                    if n in segs[b].get(cat, []):
                        m[:, :] = True
                else:
                    for layer in segs[b].get(cat, []):
                        m |= np.asarray(layer) == n
            lmask.append(m)
        for j in range(L):
            G[j] += lmask[j].sum()
        for u in range(U):
            mask = acts[b, u] > thr[u]
            a = int(mask.sum())
            Aa[u] += a
            for ci, cat in enumerate(categories):
                mine = [j for j in range(L) if primary[labels[j]] == cat]
                if any(lmask[j].any() for j in mine):
                    Ao[u, ci] += a
                if any((lmask[j] & mask).any() for j in mine):
                    Al[u, ci] += a
            for j in range(L):
                I[u, j] += int((mask & lmask[j]).sum())
    return {"I": I, "G": G, "A_original": Ao, "A_lite": Al, "A_all": Aa}


def reference_iou(ref, labels, primary, categories, union):
    ci = [categories.index(primary[n]) for n in labels]
    if union == "all":
        A = np.repeat(ref["A_all"][:, None], len(labels), 1)
    else:
        A = ref["A_" + union][:, ci]
    den = A + ref["G"][None, :] - ref["I"]
    out = np.zeros(den.shape)
    nz = den > 0
    out[nz] = ref["I"][nz] / den[nz]
    return out


def to_segbatch(segs, categories, image_level, size):
    """Pad the per-image lists by hand (independent of dissect.stats.segbatch)."""
    B = len(segs)
    seg = SegBatch()
    for cat in categories:
        if cat in image_level:
            k = max(1, max(len(s.get(cat, [])) for s in segs))
            t = torch.zeros(B, k, dtype=torch.long)
            for b, s in enumerate(segs):
                for j, n in enumerate(s.get(cat, [])):
                    t[b, j] = n
            seg.image_level[cat] = t
        else:
            k = max(len(s.get(cat, [])) for s in segs)
            t = torch.zeros(B, k, *size, dtype=torch.long)
            for b, s in enumerate(segs):
                for j, layer in enumerate(s.get(cat, [])):
                    t[b, j] = torch.as_tensor(np.asarray(layer, np.int64))
            seg.pixel[cat] = t
    return seg


def random_case(seed, B=5, U=6, size=(6, 5)):
    """Random multi-layer labels, image-level labels, labels shared between categories/layers."""
    rng = np.random.default_rng(seed)
    categories = ["object", "part", "material", "scene", "texture", "color"]
    image_level = {"scene", "texture"}
    labels = list(range(1, 19))  # 19 and 20 appear in the data but are not tallied
    primary = {n: categories[rng.integers(len(categories))] for n in labels}
    primary[5] = "material"  # 5 also appears on object and part planes
    primary[9] = "texture"   # 9 appears image-level (texture) and on part planes
    primary[12] = "scene"    # 12 appears in scene and texture lists
    segs = []
    for b in range(B):
        s = {}
        s["object"] = [rng.choice([0, 1, 2, 3, 5, 19], size=size) for _ in range(rng.integers(0, 3))]
        s["part"] = [rng.choice([0, 0, 4, 5, 9, 6], size=size) for _ in range(rng.integers(0, 4))]
        s["material"] = [rng.choice([0, 5, 7, 8], size=size)]
        s["color"] = [rng.choice([10, 11, 13, 20], size=size)]
        s["scene"] = [int(x) for x in rng.choice([12, 14, 15], size=rng.integers(0, 2), replace=False)]
        s["texture"] = [int(x) for x in rng.choice([9, 12, 16, 17, 18, 20], size=rng.integers(0, 4), replace=False)]
        segs.append(s)
    acts = rng.standard_normal((B, U) + size).astype(np.float32)
    thr = np.array([np.quantile(acts[:, u], rng.uniform(0.3, 0.95)) for u in range(U)], np.float32)
    thr[0] = acts[:, 0].max()         # empty mask everywhere
    thr[1] = acts[:, 1].min() - 1.0   # full mask
    return acts, thr, segs, labels, primary, categories, image_level


def make_tally(labels, primary, categories, image_level, device="cpu"):
    return Tally(labels, categories, image_level, primary, device)


def assert_counts(t, ref):
    for k in ("I", "G", "A_original", "A_lite", "A_all"):
        np.testing.assert_array_equal(getattr(t, k).cpu().numpy(), ref[k], err_msg=k)


# --------------------------------------------------------------------------- tally
@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_reference(seed):
    acts, thr, segs, labels, primary, categories, image_level = random_case(seed)
    ref = reference_counts(acts, thr, segs, labels, primary, categories, image_level)
    t = make_tally(labels, primary, categories, image_level)
    for lo, hi in ((0, 2), (2, 5)):  # two batches of different sizes
        t.add(torch.from_numpy(acts[lo:hi]), torch.from_numpy(thr), to_segbatch(segs[lo:hi], categories, image_level, acts.shape[2:]))
    assert_counts(t, ref)
    assert t.images == 5
    for union in UNIONS:
        np.testing.assert_array_equal(t.iou(union).numpy(), reference_iou(ref, labels, primary, categories, union))


def test_join_split_into_chunks(monkeypatch):
    acts, thr, segs, labels, primary, categories, image_level = random_case(11, B=4)
    ref = reference_counts(acts, thr, segs, labels, primary, categories, image_level)
    monkeypatch.setattr(tally_mod, "_MAX_JOIN", 40)  # forces many small chunks
    t = make_tally(labels, primary, categories, image_level)
    t.add(torch.from_numpy(acts), torch.from_numpy(thr), to_segbatch(segs, categories, image_level, acts.shape[2:]))
    assert_counts(t, ref)


def test_unit_equal_to_label_mask_scores_one():
    rng = np.random.default_rng(3)
    B, size = 4, (5, 7)
    categories, image_level = ["object", "scene"], {"scene"}
    labels, primary = [1, 2, 3, 4], {1: "object", 2: "object", 3: "scene", 4: "scene"}
    segs = [{"object": [rng.choice([0, 1, 2], size=size)], "scene": [3 if b % 2 else 4]} for b in range(B)]
    acts = np.zeros((B, 3) + size, np.float32)
    for b in range(B):
        acts[b, 0] = segs[b]["object"][0] == 2          # exactly label 2's mask
        acts[b, 1] = 1.0 if segs[b]["scene"][0] == 3 else 0.0  # exactly scene 3's images
    acts[:, 2] = rng.random((B,) + size)
    thr = np.full(3, 0.5, np.float32)
    t = make_tally(labels, primary, categories, image_level)
    t.add(torch.from_numpy(acts), torch.from_numpy(thr), to_segbatch(segs, categories, image_level, size))
    for union in UNIONS:
        iou = t.iou(union)
        assert iou[0, 1].item() == 1.0 and iou[1, 2].item() == 1.0, union
        res = scores(t, union, 0.04)
        assert (res[0]["number"], res[0]["iou"], res[0]["detector"]) == (2, 1.0, True)
        assert (res[1]["number"], res[1]["category"], res[1]["iou"]) == (3, "scene", 1.0)


def test_hand_computed_example():
    # seg 2 x 3, two images, two units; labels 1 sky, 2 tree (object), 3 beach-s (scene)
    #   image 0: object [[1,1,2],[0,2,2]], scene [3];  image 1: object [[2,0,0],[0,0,0]], no scene
    #   unit 0 masks: image 0 {(0,0),(0,1)}, image 1 {(1,1),(1,2)};  unit 1: image 0 {}, image 1 {(0,0)}
    # G: sky 2, tree 3 + 1 = 4, beach 6 (whole plane of image 0)
    # I unit 0: sky 2, tree 0, beach 2 (mask of image 0);  unit 1: sky 0, tree 1, beach 0
    # A_all: unit 0: 2 + 2 = 4, unit 1: 0 + 1 = 1
    # A_original (object, scene): image 0 carries both, image 1 only object
    #   unit 0: object 2 + 2 = 4, scene 2;  unit 1: object 0 + 1 = 1, scene 0
    # A_lite: unit 0: image 0 mask covers sky -> object 2, scene present and mask non-empty -> scene 2;
    #   image 1 mask covers no label -> nothing.  unit 1: image 1 mask covers tree -> object 1
    # IoU original: u0 sky 2/(4+2-2) = .5, tree 0, beach 2/(2+6-2) = 1/3; u1 tree 1/(1+4-1) = .25
    # IoU lite:     u0 sky 2/(2+2-2) = 1,  beach 2/(2+6-2) = 1/3;        u1 tree .25
    # IoU all:      u0 sky 2/(4+2-2) = .5, beach 2/(4+6-2) = .25;         u1 tree .25, beach 0
    seg = SegBatch(pixel={"object": torch.tensor([[[[1, 1, 2], [0, 2, 2]]], [[[2, 0, 0], [0, 0, 0]]]])},
                   image_level={"scene": torch.tensor([[3], [0]])})
    acts = torch.zeros(2, 2, 2, 3)
    acts[0, 0, 0, 0] = acts[0, 0, 0, 1] = 5
    acts[1, 0, 1, 1] = acts[1, 0, 1, 2] = 5
    acts[1, 1, 0, 0] = 9
    t = Tally([1, 2, 3], ["object", "scene"], ["scene"], {1: "object", 2: "object", 3: "scene"})
    t.add(acts, torch.tensor([1.0, 1.0]), seg)
    assert t.G.tolist() == [2, 4, 6]
    assert t.I.tolist() == [[2, 0, 2], [0, 1, 0]]
    assert t.A_all.tolist() == [4, 1]
    assert t.A_original.tolist() == [[4, 2], [1, 0]]
    assert t.A_lite.tolist() == [[2, 2], [1, 0]]
    assert t.iou("original").tolist() == [[0.5, 0.0, 1 / 3], [0.0, 0.25, 0.0]]
    assert t.iou("lite").tolist() == [[1.0, 0.0, 1 / 3], [0.0, 0.25, 0.0]]
    assert t.iou("all").tolist() == [[0.5, 0.0, 0.25], [0.0, 0.25, 0.0]]
    res = scores(t, "original", 0.3, label_names={1: "sky", 2: "tree", 3: "beach-s"})
    assert (res[0]["label"], res[0]["category"], res[0]["iou"], res[0]["detector"]) == ("sky", "object", 0.5, True)
    assert res[0]["per_category"]["scene"] == {"number": 3, "label": "beach-s", "iou": 1 / 3, "truth": 6,
                                               "activation": 2, "intersect": 2}
    assert (res[1]["label"], res[1]["iou"], res[1]["detector"], res[1]["unit"]) == ("tree", 0.25, False, 2)
    assert res[1]["per_category"]["scene"]["iou"] == 0.0


def test_merge_of_shards_equals_one_pass_and_state_round_trip():
    acts, thr, segs, labels, primary, categories, image_level = random_case(21, B=6)
    size = acts.shape[2:]
    whole = make_tally(labels, primary, categories, image_level)
    whole.add(torch.from_numpy(acts), torch.from_numpy(thr), to_segbatch(segs, categories, image_level, size))
    a = make_tally(labels, primary, categories, image_level)
    b = make_tally(labels, primary, categories, image_level)
    a.add(torch.from_numpy(acts[:4]), torch.from_numpy(thr), to_segbatch(segs[:4], categories, image_level, size))
    b.add(torch.from_numpy(acts[4:]), torch.from_numpy(thr), to_segbatch(segs[4:], categories, image_level, size))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    a2 = make_tally(labels, primary, categories, image_level)
    a2.load_state_dict(torch.load(buf, weights_only=True))
    a2.merge(b)
    ref = reference_counts(acts, thr, segs, labels, primary, categories, image_level)
    assert_counts(a2, ref)
    assert_counts(whole, ref)
    other = make_tally(labels[:-1], primary, categories, image_level)
    with pytest.raises(ValueError, match="different labels"):
        a2.merge(other)


def test_tally_bad_input():
    with pytest.raises(ValueError, match="label 2: primary category 'part'"):
        Tally([1, 2], ["object"], [], {1: "object", 2: "part"})
    t = Tally([1], ["object", "scene"], ["scene"], {1: "object"})
    seg = SegBatch(pixel={"object": torch.zeros(1, 1, 4, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match="image-level category 'scene' is missing"):
        t.add(torch.zeros(1, 2, 4, 4), torch.zeros(2), seg)
    seg.image_level["scene"] = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected \[1, layers, 3, 3\]"):
        t.add(torch.zeros(1, 2, 3, 3), torch.zeros(2), seg)
    with pytest.raises(ValueError, match="union must be one of"):
        t.add(torch.zeros(1, 2, 4, 4), torch.zeros(2), seg) or t.iou("bogus")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_tally_on_cuda_matches_reference():
    acts, thr, segs, labels, primary, categories, image_level = random_case(5)
    ref = reference_counts(acts, thr, segs, labels, primary, categories, image_level)
    t = make_tally(labels, primary, categories, image_level, device="cuda")
    seg = to_segbatch(segs, categories, image_level, acts.shape[2:]).to("cuda")
    t.add(torch.from_numpy(acts).cuda(), torch.from_numpy(thr).cuda(), seg)
    assert t.I.is_cuda
    assert_counts(t, ref)


# --------------------------------------------------------------------------- quantile
@pytest.mark.parametrize("q", [0.005, 0.01, 0.1, 0.37, 0.5, 0.0, 1.0])
def test_quantile_matches_numpy(q):
    rng = np.random.default_rng(int(q * 1000))
    acts = rng.standard_normal((37, 4, 3, 5)).astype(np.float32)
    acts[:, 3] = np.round(acts[:, 3])  # many ties
    tq = TopQuantile(4, q, total_count=37 * 15)
    for lo, hi in ((0, 10), (10, 11), (11, 37)):
        tq.add(torch.from_numpy(acts[lo:hi]))
    want = np.array([np.quantile(acts[:, u].ravel(), 1 - q) for u in range(4)])
    got = tq.thresholds().numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert int(tq.fill.max()) <= tq.cap  # never more than keep + slack values per unit


def test_quantile_float64_and_flat_input():
    rng = np.random.default_rng(7)
    acts = rng.random((1000, 3))
    tq = TopQuantile(3, 0.005, total_count=1000)
    tq.add(torch.from_numpy(acts[:300]))
    tq.add(torch.from_numpy(acts[300:]))
    want = np.array([np.quantile(acts[:, u], 1 - 0.005) for u in range(3)])
    np.testing.assert_array_equal(tq.thresholds().numpy(), want)


def test_quantile_merge_and_state_round_trip():
    rng = np.random.default_rng(8)
    acts = rng.standard_normal((50, 5, 2, 2)).astype(np.float32)
    n = 50 * 4
    a, b = TopQuantile(5, 0.02, n), TopQuantile(5, 0.02, n)
    a.add(torch.from_numpy(acts[:20]))
    b.add(torch.from_numpy(acts[20:]))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = TopQuantile(5, 0.02, n)
    c.load_state_dict(torch.load(buf, weights_only=True))
    c.merge(b)
    want = np.array([np.quantile(acts[:, u].ravel(), 1 - 0.02) for u in range(5)], np.float32)
    np.testing.assert_array_equal(c.thresholds().numpy(), want)
    with pytest.raises(ValueError, match="expected total_count"):
        a.thresholds()
    with pytest.raises(ValueError, match="NaN or inf"):
        a.add(torch.full((1, 5, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="different units"):
        a.merge(TopQuantile(4, 0.02, n))


# --------------------------------------------------------------------------- top-k images
def reference_topk(acts, idx, k):
    out = []
    for u in range(acts.shape[1]):
        order = sorted(range(len(idx)), key=lambda b: (-float(acts[b, u].max()), int(idx[b])))[:k]
        out.append(order)
    return out


def test_topk_images_match_reference_with_ties_and_merge():
    rng = np.random.default_rng(4)
    acts = rng.integers(0, 4, size=(23, 3, 2, 3)).astype(np.float32)  # many tied maxima
    idx = rng.permutation(100)[:23]
    ref = reference_topk(acts, idx, 5)
    one = TopKImages(3, 5)
    a, b = TopKImages(3, 5), TopKImages(3, 5)
    for lo, hi in ((0, 7), (7, 16), (16, 23)):
        one.add(torch.from_numpy(acts[lo:hi]), idx[lo:hi])
    a.add(torch.from_numpy(acts[:9]), idx[:9])
    b.add(torch.from_numpy(acts[9:]), idx[9:])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = TopKImages(3, 5)
    c.load_state_dict(torch.load(buf, weights_only=True))
    c.merge(b)
    for t in (one, c):
        r = t.result()
        for u in range(3):
            assert r["indices"][u].tolist() == [int(idx[j]) for j in ref[u]]
            assert r["values"][u].tolist() == [float(acts[j, u].max()) for j in ref[u]]
            np.testing.assert_array_equal(r["maps"][u].float().numpy(), acts[ref[u], u])


# --------------------------------------------------------------------------- upsample
def test_upsample_bilinear_hand_values_and_field_mode():
    x = torch.tensor([[[[0.0, 1.0]]]])
    # align_corners=False: output centres map to -0.25, 0.25, 0.75, 1.25 -> clamped 0, .25, .75, 1
    assert upsample(x, (1, 4))[0, 0, 0].tolist() == [0.0, 0.25, 0.75, 1.0]
    a = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    # cells of stride 32 centred at 15.5 in a 224 input: the same as bilinear align_corners=False
    f = upsample(a, (112, 112), mode="field", field=(15.5, 32.0), input_size=(224, 224))
    torch.testing.assert_close(f, upsample(a, (112, 112)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="needs field"):
        upsample(a, (112, 112), mode="field")


# --------------------------------------------------------------------------- add_activations
@pytest.mark.parametrize("mode,size", [("bilinear", (6, 5)), ("bilinear", (16, 11)), ("nearest", (9, 10)), ("field", (12, 12))])
def test_add_activations_equals_add_of_upsampled(mode, size):
    """The tiled fast path gives exactly the counts of add(upsample(acts)) and of the reference."""
    acts_up_unused, thr_unused, segs, labels, primary, categories, image_level = random_case(31, B=4, size=size)
    rng = np.random.default_rng(5)
    acts = rng.standard_normal((4, 6, 3, 4)).astype(np.float32)
    acts[0, 2] = 0.5   # a flat map exactly at its threshold: no pixel passes
    acts[1, 3, 1, 2] = 7.0
    kw = {"field": (2.0, 4.0), "input_size": (16, 16)} if mode == "field" else {}
    up = upsample(torch.from_numpy(acts), size, mode, **kw)
    thr = np.quantile(up.numpy().transpose(1, 0, 2, 3).reshape(6, -1), 0.9, axis=1).astype(np.float32)
    thr[2] = 0.5
    thr[4] = up[:, 4].max().item()  # equal to the largest upsampled value: empty mask
    seg = to_segbatch(segs, categories, image_level, size)
    ref = reference_counts(up.numpy(), thr, segs, labels, primary, categories, image_level)
    fast = make_tally(labels, primary, categories, image_level)
    fast.add_activations(torch.from_numpy(acts), torch.from_numpy(thr), seg, mode, **kw)
    assert_counts(fast, ref)
    assert fast.A_all[4] == 0


def test_upsample_modes_agree_with_torch():
    import torch.nn.functional as F
    a = torch.randn(2, 3, 7, 5)
    torch.testing.assert_close(upsample(a, (112, 80)), F.interpolate(a, (112, 80), mode="bilinear", align_corners=False),
                               rtol=0, atol=1e-5)
    assert torch.equal(upsample(a, (15, 11), "nearest"), F.interpolate(a, (15, 11), mode="nearest"))


# --------------------------------------------------------------------------- high resolution and T = 0
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_add_activations_56x56_relu_and_zero_thresholds(mode):
    """A 56 x 56 layer upsampled to 112 x 112 (ReLU maps, units with T = 0): the counts of the
    plain reference on the dense upsampled maps, and T = 0 units evaluate only tiles near non-zeros."""
    _, _, segs, labels, primary, categories, image_level = random_case(41, B=2, size=(112, 112))
    rng = np.random.default_rng(9)
    acts = np.maximum(rng.standard_normal((2, 5, 56, 56)), 0).astype(np.float32)
    acts[:, 3] = 0.0
    acts[0, 3, 20, 30] = 2.5   # one non-zero cell in an otherwise zero map
    acts[:, 4] = 0.0           # all zero: nothing passes T = 0
    up = upsample(torch.from_numpy(acts), (112, 112), mode)
    thr = np.quantile(up.numpy().transpose(1, 0, 2, 3).reshape(5, -1), 0.95, axis=1).astype(np.float32)
    thr[1] = thr[3] = thr[4] = 0.0
    seg = to_segbatch(segs, categories, image_level, (112, 112))
    ref = reference_counts(up.numpy(), thr, segs, labels, primary, categories, image_level)
    t = make_tally(labels, primary, categories, image_level)
    t.add_activations(torch.from_numpy(acts[:, 3:]), torch.from_numpy(thr[3:]), seg, mode)  # units 3, 4 alone
    assert 0 < t.tiles_evaluated <= 4  # the tiles touching the single non-zero cell, not 56 x 56 of them
    assert t.A_all.tolist() == [int((up[:, 3] > 0).sum()), 0]
    t = make_tally(labels, primary, categories, image_level)
    t.add_activations(torch.from_numpy(acts), torch.from_numpy(thr), seg, mode)
    assert_counts(t, ref)
