"""The tally kernel's paths (issue 16): label-combination ids with and without key re-numbering,
many layers and labels, the sparse pair counter, image-level-only stores, float16 tiles at ties,
the unknown-label check folded into the label lookup, and the explain mask entries. Oracle: the
plain loop reference of test_stats_reference (numpy loops over images, units and labels) on
the dense upsampled maps, and hand-built cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import dissect.stats.tally as tally_mod
from dissect.stats import SegBatch, Tally, UnknownLabel, upsample
from dissect.stats.tiles import mask_entries
from test_stats_reference import assert_counts, make_tally, random_case, reference_counts, to_segbatch


def _both_paths(acts, thr, segs, labels, primary, categories, image_level, size, mode="bilinear", **kw):
    """Counts of add(upsample(acts)) and of add_activations(acts), each checked against the reference."""
    up = upsample(torch.from_numpy(acts), size, mode, **kw)
    ref = reference_counts(up.numpy(), thr, segs, labels, primary, categories, image_level)
    seg = to_segbatch(segs, categories, image_level, size)
    for fast in (False, True):
        t = make_tally(labels, primary, categories, image_level)
        if fast:
            t.add_activations(torch.from_numpy(acts), torch.from_numpy(thr), seg, mode, size=size, **kw)
        else:
            t.add(up, torch.from_numpy(thr), seg)
        assert_counts(t, ref)
    return ref


def _layer_case(seed, B=3, U=4, cell=(3, 4), size=(9, 10), layers=8, labels=None):
    """Many object layers (the same label on several layers of a pixel) plus scene labels."""
    rng = np.random.default_rng(seed)
    categories, image_level = ["object", "part", "scene"], {"scene"}
    labels = labels or list(range(1, 13))
    primary = {n: categories[int(rng.integers(3))] for n in labels}
    pool = [0] + labels[:10] + [40007]  # one number that is not tallied
    segs = [{"object": [rng.choice(pool, size=size) for _ in range(layers)],
             "part": [rng.choice(pool[:4], size=size) for _ in range(2)],
             "scene": [int(rng.choice(labels[:6]))]} for _ in range(B)]
    acts = rng.standard_normal((B, U) + cell).astype(np.float32)
    thr = np.quantile(acts.reshape(B, U, -1).transpose(1, 0, 2).reshape(U, -1), 0.6, axis=1).astype(np.float32)
    return acts, thr, segs, labels, primary, categories, image_level, size


@pytest.mark.parametrize("limit", [1 << 62, 1 << 12, 40])
def test_many_layers_and_key_renumbering(monkeypatch, limit):
    """Eight object layers: the packed key overflows the (lowered) limit and is re-numbered."""
    monkeypatch.setattr(tally_mod, "_KEY_LIMIT", limit)
    _both_paths(*_layer_case(1))


def test_many_labels_over_int16(monkeypatch):
    """40,000 tallied labels (columns past int16), most absent: the present ones match the reference
    computed over them alone, the others are zero."""
    acts, thr, segs, labels, primary, categories, image_level, size = _layer_case(2, layers=3)
    big = list(range(1, 40001))
    prim_big = {n: primary.get(n, "part") for n in big}
    up = upsample(torch.from_numpy(acts), size)
    ref = reference_counts(up.numpy(), thr, segs, labels, primary, categories, image_level)
    t = make_tally(big, prim_big, categories, image_level)
    t.add_activations(torch.from_numpy(acts), torch.from_numpy(thr), to_segbatch(segs, categories, image_level, size))
    cols = [n - 1 for n in labels]
    np.testing.assert_array_equal(t.I[:, cols].numpy(), ref["I"])
    np.testing.assert_array_equal(t.G[cols].numpy(), ref["G"])
    assert int(t.I.sum()) == int(ref["I"].sum()) and int(t.G.sum()) == int(ref["G"].sum())
    for k in ("A_original", "A_lite", "A_all"):
        np.testing.assert_array_equal(getattr(t, k).numpy(), ref[k], err_msg=k)


def test_sparse_pair_counter_and_tile_chunks(monkeypatch):
    """_MAX_JOIN below combinations x units: torch.unique counting, tiles in many chunks."""
    monkeypatch.setattr(tally_mod, "_MAX_JOIN", 50)
    acts, thr, segs, labels, primary, categories, image_level = random_case(13, B=4, size=(12, 11))
    rng = np.random.default_rng(3)
    small = rng.standard_normal((4, 6, 3, 4)).astype(np.float32)
    thr = np.quantile(upsample(torch.from_numpy(small), (12, 11)).numpy().transpose(1, 0, 2, 3).reshape(6, -1),
                      0.7, axis=1).astype(np.float32)
    _both_paths(small, thr, segs, labels, primary, categories, image_level, (12, 11))


def test_image_level_only_and_empty_masks():
    """No pixel category (size given), and a batch where no unit passes its threshold."""
    rng = np.random.default_rng(4)
    categories, image_level = ["scene", "texture"], {"scene", "texture"}
    labels, primary = [1, 2, 3, 4], {1: "scene", 2: "scene", 3: "texture", 4: "texture"}
    segs = [{"scene": [int(rng.choice([1, 2]))], "texture": [3, 4][: int(rng.integers(0, 3))]} for _ in range(5)]
    acts = rng.standard_normal((5, 3, 2, 3)).astype(np.float32)
    thr = np.array([0.0, 0.5, 100.0], np.float32)  # unit 2: empty masks everywhere
    _both_paths(acts, thr, segs, labels, primary, categories, image_level, (7, 9))
    thr[:] = 100.0
    ref = _both_paths(acts, thr, segs, labels, primary, categories, image_level, (7, 9))
    assert ref["A_all"].sum() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("cell,size,mode", [((4, 4), (16, 16), "bilinear"), ((3, 4), (50, 45), "bilinear"),
                                            ((3, 4), (50, 45), "field"), ((5, 3), (23, 40), "nearest")])
def test_ties_and_one_ulp_below(dtype, cell, size, mode):
    """Thresholds equal to an upsampled value and one ulp below it (the default cache dtype is
    float16), ReLU zeros with T = 0, negative T; tiles whole or split into sub-tiles (bands of 17 and
    12 outputs: 3 x 2 sub-tiles, the last ones partly padded): exactly the mask of the dense maps."""
    _, _, segs, labels, primary, categories, image_level = random_case(17, B=3, size=size)
    rng = np.random.default_rng(8)
    acts = torch.from_numpy(rng.standard_normal((3, 6) + cell).astype(np.float32)).to(dtype)
    acts[:, 4].clamp_(min=0)
    kw = {"field": (4.0, 9.0), "input_size": (60, 50)} if mode == "field" else {}
    up = upsample(acts, size, mode, **kw)
    flat = up.transpose(0, 1).reshape(6, -1)
    top, second = flat.max(1).values, flat.kthvalue(flat.shape[1] - 5, 1).values
    T = torch.stack([top, second, torch.nextafter(top, top - 1), torch.nextafter(second, second - 1),
                     torch.zeros_like(top), -top]).diagonal().contiguous()
    seg = to_segbatch(segs, categories, image_level, size)
    ref = reference_counts(up.float().numpy(), T.float().numpy(), segs, labels, primary, categories, image_level)
    t = make_tally(labels, primary, categories, image_level)
    t.add_activations(acts, T, seg, mode, **kw)
    assert_counts(t, ref)
    assert t.A_all[0] == 0 and t.A_all[2] > 0


def test_mask_entries_equal_dense_mask():
    rng = np.random.default_rng(12)
    acts = torch.from_numpy(np.maximum(rng.standard_normal((3, 5, 7, 7)), 0).astype(np.float32))
    thr = torch.tensor([0.0, 0.3, 0.8, 1.5, 9.0])
    for mode, kw in (("bilinear", {}), ("nearest", {}), ("field", {"field": (3.5, 8.0), "input_size": (56, 56)})):
        up = upsample(acts, (28, 30), mode, **kw)
        b, u, y, x = (up > thr.view(1, 5, 1, 1)).nonzero(as_tuple=True)
        want = sorted(zip(u.tolist(), (b * 28 * 30 + y * 30 + x).tolist()))
        eu, ep = mask_entries(acts, thr, (28, 30), mode, **kw)
        assert sorted(zip(eu.tolist(), ep.tolist())) == want, mode


def test_unknown_label_raised_by_the_lookup():
    """A non-zero number label.csv lacks (here 5, -3, 9999) raises UnknownLabel naming the category,
    the image (first in the batch) and the number (first in layer, row, column order); numbers
    label.csv has but the tally does not count (7) are ignored."""
    labels, primary = [1, 2, 3], {1: "object", 2: "object", 3: "part"}
    known = [1, 2, 3, 7]
    obj = torch.tensor([[[[1, 2], [7, 0]]], [[[1, 1], [2, 2]]], [[[2, 2], [1, 1]]]])
    part = torch.zeros(3, 2, 2, 2, dtype=torch.long)
    acts, thr = torch.ones(3, 2, 2, 2), torch.zeros(2)

    def tally():
        return Tally(labels, ["object", "part"], [], primary, known=known)

    t = tally()
    t.add_activations(acts, thr, SegBatch(pixel={"object": obj, "part": part}))
    plain = make_tally(labels, primary, ["object", "part"], set())
    plain.add(acts, thr, SegBatch(pixel={"object": obj, "part": part}))
    assert_counts(t, {k: getattr(plain, k).numpy() for k in ("I", "G", "A_original", "A_lite", "A_all")})
    assert t.G.tolist() == [5, 5, 0]
    for bad, where in ((5, (1, 1, 0)), (-3, (2, 0, 1)), (9999, (1, 0, 1))):
        p = part.clone()
        p[where[0], where[1], where[2], 1] = bad
        p[2, 1, 1, 1] = 51  # a later image holds another unknown number: the first image is named
        with pytest.raises(UnknownLabel) as e:
            tally().add_activations(acts, thr, SegBatch(pixel={"object": obj, "part": p}))
        assert (e.value.category, e.value.image, e.value.number) == ("part", where[0], bad)
        assert str(e.value) == (f"a part segmentation holds label number {bad}, which is not in label.csv "
                                "(broden validate rejects this store)")
        with pytest.raises(UnknownLabel):
            tally().add(acts, thr, SegBatch(pixel={"object": obj, "part": p}))
        plain = make_tally(labels, primary, ["object", "part"], set())  # without ``known``: ignored
        plain.add_activations(acts, thr, SegBatch(pixel={"object": obj, "part": p}))
        assert plain.G.tolist() == [5, 5, 0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_constant_maps_thresholded_at_their_value(dtype):
    """A constant map interpolates to values a rounding above and below its constant c; with T = c
    only those above pass, also where a sub-tile's corner pixels all round to c or below (the
    rounding bound of the sub-tile test)."""
    _, _, segs, labels, primary, categories, image_level = random_case(23, B=2, size=(50, 45))
    c = (torch.rand(2, 8, generator=torch.Generator().manual_seed(3)) * 10 + 0.1).to(dtype)
    acts = c.view(2, 8, 1, 1).expand(2, 8, 3, 4).contiguous()
    acts[1, :4] = c[0, :4].view(4, 1, 1)  # the same constants in both images for units 0-3
    T = c[0].clone()
    up = upsample(acts, (50, 45))
    assert bool((up[0] > T.view(8, 1, 1)).any()), "no pixel rounds above its constant: the case tests nothing"
    ref = reference_counts(up.float().numpy(), T.float().numpy(), segs, labels, primary, categories, image_level)
    t = make_tally(labels, primary, categories, image_level)
    t.add_activations(acts, T, to_segbatch(segs, categories, image_level, (50, 45)))
    assert_counts(t, ref)


def test_layers_share_one_label_lookup():
    """batch_labels() of one tally, passed to add_activations of two layers (7 x 7 and 3 x 4 maps):
    each layer's counts are those of the reference; labels of another batch size are refused."""
    _, _, segs, labels, primary, categories, image_level = random_case(29, B=3, size=(14, 12))
    rng = np.random.default_rng(2)
    seg = to_segbatch(segs, categories, image_level, (14, 12))
    first = make_tally(labels, primary, categories, image_level)
    shared = first.batch_labels(seg)
    for shape in ((3, 5, 7, 7), (3, 4, 3, 4)):
        acts = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        up = upsample(acts, (14, 12))
        thr = up.transpose(0, 1).reshape(shape[1], -1).quantile(0.8, dim=1)
        ref = reference_counts(up.numpy(), thr.numpy(), segs, labels, primary, categories, image_level)
        t = make_tally(labels, primary, categories, image_level)
        t.add_activations(acts, thr, seg, labels=shared)
        assert_counts(t, ref)
    other = first.batch_labels(to_segbatch(segs[:2], categories, image_level, (14, 12)))
    with pytest.raises(ValueError, match="labels were made for another batch size"):
        make_tally(labels, primary, categories, image_level).add_activations(acts, thr, seg, labels=other)
    with pytest.raises(ValueError, match="labels were made for another"):
        make_tally(labels[:-1], primary, categories, image_level).add_activations(acts, thr, seg, labels=shared)


def test_empty_batch_counts_nothing():
    t = Tally([1, 2], ["object", "scene"], ["scene"], {1: "object", 2: "scene"}, units=3)
    seg = SegBatch(pixel={"object": torch.zeros(0, 1, 4, 4, dtype=torch.long)},
                   image_level={"scene": torch.zeros(0, 1, dtype=torch.long)})
    t.add_activations(torch.zeros(0, 3, 2, 2), torch.zeros(3), seg)
    t.add(torch.zeros(0, 3, 4, 4), torch.zeros(3), seg)
    assert t.images == 0 and int(t.I.sum() + t.G.sum() + t.A_all.sum() + t.A_lite.sum() + t.A_original.sum()) == 0


@pytest.mark.parametrize("runs", [1, 3, 40, 10000])
def test_unique_runs_equals_torch_unique(runs):
    """Oracle: torch.unique itself, on keys with long runs, short runs (the fallback), ties across runs."""
    rng = np.random.default_rng(runs)
    vals = torch.from_numpy(rng.integers(0, 7, size=runs))
    key = vals.repeat_interleave(torch.from_numpy(rng.integers(1, 30, size=runs)))
    for k in (key, key.int()):
        got, want = tally_mod.unique_runs(k), torch.unique(k, return_inverse=True, return_counts=True)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
