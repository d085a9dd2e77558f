"""The dissection pipeline's seams (issue 12, issue 15 item 11): validated settings, one activation
loader checked before pass 1, the statistics protocol, and report masks that are the tallied masks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from broden_builder import BrodenStore
from dissect.cli import build_parser, main
from dissect.results import load_result

BASE = ["--quiet", "--workers", "0", "--device", "cpu", "--batch-size", "7"]


# ---------------------------------------------------------------------------- settings
def test_invalid_settings_are_refused_when_made():
    from dissect import DissectConfig, DissectError

    for bad in ({"upsample": "cubic"}, {"upsample": "field"}, {"union": "any"}, {"quantile": 1.5},
                {"cache_dtype": "int8"}, {"top_k": 0}):
        with pytest.raises(DissectError):
            DissectConfig(**bad)
    with pytest.raises(DissectError, match="upsample"):
        DissectConfig().replace(upsample="area")


def test_cli_defaults_and_choices_are_the_configs(tmp_path, capsys):
    from dissect import DissectConfig

    args = build_parser().parse_args(["run", "--store", "s", "--model", "m", "--layer", "l", "--out", "o"])
    want = DissectConfig()
    for f in dataclasses.fields(DissectConfig):
        if hasattr(args, f.name) and f.name not in ("categories", "input_size", "mean", "std"):
            assert getattr(args, f.name) == getattr(want, f.name), f.name
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["score", "--store", "s", "--activations", "a.npy", "--out", "o", "--upsample", "area"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------------------- activation files
def _score(store, path, out, name, *extra) -> int:
    return main(["score", "--store", str(store), "--activations", str(path), "--out", str(out), "--name", name,
                 "--no-report"] + BASE + list(extra))


def _same(a, b):
    for f in ("iou.npy", "thresholds.npy"):
        np.testing.assert_array_equal(np.load(a / f), np.load(b / f), err_msg=f)
    assert (a / "tally.csv").read_text() == (b / "tally.csv").read_text()


def test_fortran_and_two_dimensional_npy_read_like_c_ordered(synthetic_store, tmp_path):
    n = len(BrodenStore(synthetic_store))
    a = np.random.default_rng(0).normal(size=(n, 5, 3, 4)).astype(np.float32)
    np.save(tmp_path / "c.npy", a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    assert not np.load(tmp_path / "f.npy", mmap_mode="r").flags.c_contiguous
    out = tmp_path / "o"
    assert _score(synthetic_store, tmp_path / "c.npy", out, "c") == 0
    assert _score(synthetic_store, tmp_path / "f.npy", out, "f") == 0  # pass 2 reads it too
    _same(out / "c", out / "f")
    # the documented [N, units] layout is [N, units, 1, 1]
    v = a.mean((2, 3))
    np.save(tmp_path / "v2.npy", v)
    np.save(tmp_path / "v4.npy", v[:, :, None, None])
    assert _score(synthetic_store, tmp_path / "v2.npy", out, "v2") == 0
    assert _score(synthetic_store, tmp_path / "v4.npy", out, "v4") == 0
    _same(out / "v2", out / "v4")
    assert load_result(out / "v2").settings["layer_shape"] == [5, 1, 1]


def test_files_that_are_not_arrays_get_a_clear_error_and_no_unpickling_advice(synthetic_store, tmp_path, capsys):
    (tmp_path / "t.npy").write_text("0.1 0.2 0.3\n0.4 0.5 0.6\n")
    (tmp_path / "t.pt").write_text("not a tensor\n")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, says in (("t.npy", "not a .npy array"), ("t.pt", "cannot read a tensor"), ("o.npy", "o.npy")):
        assert _score(synthetic_store, tmp_path / name, tmp_path / "o", "x") == 1
        err = capsys.readouterr().err
        assert says in err and name in err and "Traceback" not in err
        assert not any(w in err.lower() for w in ("unsafe", "weights_only=false", "allow_pickle=true", "trust"))


# ---------------------------------------------------------------------------- statistics protocol
def test_every_statistic_follows_the_protocol():
    from dissect.stats import Tally, TopKImages, TopQuantile
    from dissect.stats.protocol import REDUCTIONS, Statistic

    stats = [TopQuantile(3, 0.1, 40), TopKImages(3, 2), Tally([1, 2], ["object"], [], {1: "object", 2: "object"}, units=3)]
    for s in stats:
        assert isinstance(s, Statistic) and s.reduction in REDUCTIONS
        assert s.to("cpu") is s
        clone = type(s).__new__(type(s))
        clone.__dict__.update(s.__dict__)
        clone.load_state_dict(s.state_dict())
        if s.reduction == "sum":  # the summed entries are integer counts of the state
            assert all(k in s.state_dict() for k in s.sum_keys)


# ---------------------------------------------------------------------------- report masks = tallied masks
def test_report_masks_are_the_tallied_masks_under_nearest(synthetic_store, tmp_path, monkeypatch):
    """Under --upsample nearest the mask drawn for a top image is, pixel for pixel, the mask the tally
    counted: checked against masks computed here by integer nearest-neighbour indexing, whose pixel
    totals must also equal the tallied activation counts (union 'all')."""
    store = BrodenStore(synthetic_store)
    n, (sh, sw), (ih, iw) = len(store), (store.rows[0].sh, store.rows[0].sw), (store.rows[0].ih, store.rows[0].iw)
    assert (sh, sw) != (112, 112)  # the report must bring the counted mask to the thumbnail
    h, w, units = 5, 7, 4
    # float16-exact values: the report draws from topk.npz's float16 maps
    a = np.random.default_rng(3).normal(size=(n, units, h, w)).astype(np.float16).astype(np.float32)
    np.save(tmp_path / "acts.npy", a)

    import dissect.report.masks as masks_mod
    import dissect.report.writer as writer_mod

    drawn = []
    real_draw = masks_mod.draw_strip
    monkeypatch.setattr(writer_mod, "draw_strip", lambda tiles, dimmed, masks, *k: drawn.extend(np.array(m) for m in masks)
                        or real_draw(tiles, dimmed, masks, *k))
    monkeypatch.setattr(writer_mod, "report_threads", lambda: 1)  # strips drawn in unit order
    out = tmp_path / "o"
    assert main(["score", "--store", str(synthetic_store), "--activations", str(tmp_path / "acts.npy"), "--out", str(out),
                 "--name", "acts", "--upsample", "nearest", "--union", "all", "--top-k", "3", "--quantile", "0.1"]
                + BASE) == 0
    res = load_result(out / "acts")
    iy = (np.arange(sh) * h) // sh  # nearest: source cell floor(y * h / sh), in integers
    ix = (np.arange(sw) * w) // sw
    ref = a[:, :, iy][:, :, :, ix] > res.thresholds[None, :, None, None]  # [n, U, sh, sw]
    for u in range(units):
        cat = res.units[u]["category"] or res.categories[0]
        assert res.units[u]["per_category"][cat]["activation"] == int(ref[:, u].sum()), u
    assert len(drawn) == units * 3
    th, tw = 112, round(iw * 112 / ih)  # drawn on the thumbnails (112 px high), enlarged by nearest
    ty, tx = (np.arange(th) * sh) // th, (np.arange(tw) * sw) // tw
    for k, mask in enumerate(drawn):  # units in order, top images best first
        u, j = divmod(k, 3)
        row = int(res.topk_indices[u, j])
        expected = ref[row, u][ty][:, tx]
        assert mask.shape == (th, tw) and np.array_equal(mask, expected), (u, j)


def test_gather_sync_of_shards_equals_one_statistic(monkeypatch):
    """The declared 'gather' reduction over three ranks (the last with an empty shard) gives what one
    statistic fed with every value gives; 'sum' adds the counts."""
    import dissect.engine._distributed as dist_mod
    from dissect.engine._distributed import DistInfo, sync
    from dissect.stats import Tally, TopKImages, TopQuantile

    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(6, 3, 4, 5)).astype(np.float32))
    idx = torch.arange(6)
    whole_q, whole_k = TopQuantile(3, 0.1, 6 * 20), TopKImages(3, 2)
    whole_q.add(a), whole_k.add(a, idx)
    shards = []
    for part in (slice(0, 4), slice(4, 6), slice(0, 0)):  # rank 2 saw nothing
        q, k = TopQuantile(3, 0.1, 6 * 20), TopKImages(3, 2)
        if part.stop > part.start:
            q.add(a[part]), k.add(a[part], idx[part])
        shards.append((q, k))
    info = DistInfo(rank=0, world=3)
    for which in (0, 1):
        states = [s[which].state_dict() for s in shards]
        monkeypatch.setattr(dist_mod, "gather_states", lambda state, info, states=states: states)
        mine = shards[0][which]
        sync(mine, info)
    assert torch.equal(shards[0][0].thresholds(), whole_q.thresholds())
    assert torch.equal(shards[0][1].result()["indices"], whole_k.result()["indices"])
    assert torch.equal(shards[0][1].result()["maps"], whole_k.result()["maps"])

    t = Tally([1], ["object"], [], {1: "object"}, units=3)
    t.I += 2
    t.images = 5
    monkeypatch.setattr(dist_mod, "all_reduce_sum_", lambda tensors, device: [x.mul_(3) for x in tensors if x is not None])
    sync(t, info)
    assert int(t.I.sum()) == 3 * 2 * 3 and t.images == 15


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_topk_maps_are_the_values_the_tally_thresholded(synthetic_store, tmp_path, dtype):
    """dissect score of float32 activations: topk.npz keeps each top image's map exactly as given (the report
    and notebook threshold these maps, so a float16 rounding would move pixels at T_k across it). Oracle: the
    input array itself, at the recorded image rows; and the top images are the rows with the largest maxima."""
    n = len(BrodenStore(synthetic_store))
    a = (np.random.default_rng(3).normal(size=(n, 3, 4, 4)) * 1.001).astype(dtype)
    np.save(tmp_path / "a.npy", a)
    out = tmp_path / "o"
    assert _score(synthetic_store, tmp_path / "a.npy", out, "a") == 0
    with np.load(out / "a" / "topk.npz") as z:
        idx, maps = z["indices"], z["maps"]
    assert maps.dtype == dtype
    for u in range(3):
        best = np.argsort(-a[:, u].reshape(n, -1).max(1), kind="stable")[: idx.shape[1]]
        assert set(idx[u].tolist()) == set(best.tolist())
        for j, row in enumerate(idx[u]):
            np.testing.assert_array_equal(maps[u, j], a[row, u])
