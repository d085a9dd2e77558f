"""TopQuantile (stream and histogram methods) against np.quantile, the oracle, bit for bit."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import dissect.stats.quantile as qmod
from dissect.stats import TopQuantile


def numpy_thresholds(values: np.ndarray, q: float) -> np.ndarray:
    """values [N, U, ...] -> np.quantile per unit (float16 values interpolated in float32)."""
    v = values.astype(np.float32) if values.dtype == np.float16 else values
    return np.array([np.quantile(v[:, u].ravel(), 1 - q) for u in range(v.shape[1])], dtype=v.dtype)


def feed(tq, acts, splits):
    for lo, hi in zip(splits[:-1], splits[1:]):
        tq.add(torch.from_numpy(acts[lo:hi]))
    while tq.needs_rescan:  # the extra pass of the histogram method: the same values, other batching
        for lo in range(0, len(acts), 3):
            tq.rescan(torch.from_numpy(acts[lo:lo + 3]))
        tq.end_rescan()
    return tq.thresholds().numpy()


def data(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    a[:, 1] = np.round(a[:, 1] * 2) / 2          # heavy ties
    a[:, 2] = 0.75                               # a constant unit
    a[:, 3] = np.maximum(a[:, 3], 0)             # ReLU: most values exactly 0
    a[:, 4] = -np.abs(a[:, 4]) * 1e-3            # all negative, small
    if shape[1] > 5:
        a[:, 5] = rng.integers(0, 3, size=a[:, 5].shape) * 1e4  # few distinct, large
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("q", [0.005, 0.02, 0.3, 0.0, 1.0])
@pytest.mark.parametrize("budget", [qmod.DEFAULT_BUDGET, 1])
def test_equals_numpy_stream_and_histogram(dtype, q, budget):
    acts = data(int(q * 1000) + 3, (41, 7, 5, 6), dtype)
    tq = TopQuantile(7, q, total_count=41 * 30, memory_budget=budget)
    got = feed(tq, acts, [0, 1, 9, 10, 30, 41])
    assert tq.method == ("stream" if budget > 1 else "histogram")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, numpy_thresholds(acts, q).astype(np.float32))


@pytest.mark.parametrize("n,q", [(300, 0.05), (3000, 0.4)])
def test_compaction_many_times_small_slack(monkeypatch, n, q):
    """Many overflows (slack forced small by the step size) still keep exactly the top values; the
    first case compacts by topk (keep a small part of the buffer), the second by kthvalue."""
    monkeypatch.setattr(qmod, "_STEP", 64)
    acts = data(5, (n, 6, 2, 2), np.float32)
    acts[:, 0] = np.sort(acts[:, 0], axis=0)  # rising values: every batch displaces the kept ones
    tq = TopQuantile(6, q, total_count=n * 4)
    assert (4 * tq.keep <= tq.cap) == (q < 0.1)
    got = feed(tq, acts, list(range(0, n + 1, 7)) + [n])
    np.testing.assert_array_equal(got, numpy_thresholds(acts, q))
    assert int(tq.fill.max()) <= tq.cap


def test_float64_and_flat_input():
    rng = np.random.default_rng(1)
    acts = rng.random((1000, 3))
    tq = TopQuantile(3, 0.005, total_count=1000)
    got = feed(tq, acts, [0, 300, 1000])
    np.testing.assert_array_equal(got, numpy_thresholds(acts, 0.005))


def test_negative_zero_counts_as_zero():
    acts = np.zeros((10, 2, 1, 1), np.float32)
    acts[:5] = -0.0
    for budget in (qmod.DEFAULT_BUDGET, 1):
        got = feed(TopQuantile(2, 0.3, 10, memory_budget=budget), acts, [0, 10])
        np.testing.assert_array_equal(got, [0.0, 0.0])


@pytest.mark.parametrize("budget", [qmod.DEFAULT_BUDGET, 1])
def test_merge_and_state_round_trip(budget):
    acts = data(8, (50, 6, 2, 2), np.float16)
    n = 50 * 4
    a, b = TopQuantile(6, 0.02, n, memory_budget=budget), TopQuantile(6, 0.02, n, memory_budget=budget)
    a.add(torch.from_numpy(acts[:20]))
    b.add(torch.from_numpy(acts[20:]))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = TopQuantile(6, 0.02, n, memory_budget=budget)
    c.load_state_dict(torch.load(buf, weights_only=True))
    c.merge(b)
    np.testing.assert_array_equal(c.thresholds().numpy(), numpy_thresholds(acts, 0.02).astype(np.float32))
    with pytest.raises(ValueError, match="expected total_count"):
        a.thresholds()
    with pytest.raises(ValueError, match="NaN or inf"):
        a.add(torch.full((1, 6, 2, 2), float("nan"), dtype=torch.float16))
    with pytest.raises(ValueError, match="different units"):
        a.merge(TopQuantile(4, 0.02, n))
    with pytest.raises(ValueError, match="more than total_count"):
        c.add(torch.from_numpy(acts[:1]))


def test_histogram_method_needs_its_rescan():
    acts = data(2, (10, 6, 2, 2), np.float32)
    tq = TopQuantile(6, 0.1, 40, memory_budget=1)
    tq.add(torch.from_numpy(acts))
    assert tq.needs_rescan
    with pytest.raises(ValueError, match="rescan"):
        tq.thresholds()
    tq.rescan(torch.from_numpy(acts[:5]))
    with pytest.raises(ValueError, match="expected 40"):
        tq.end_rescan()
    # float16 values need no extra pass: the 16-bit histogram is exact
    t16 = TopQuantile(6, 0.1, 40, memory_budget=1)
    t16.add(torch.from_numpy(acts.astype(np.float16)))
    assert not t16.needs_rescan


def test_memory_independent_of_n():
    """Held state does not grow with the number of images: the histogram method for a budget
    smaller than the kept values would need, the same bytes at N and 8 N."""
    rng = np.random.default_rng(3)
    held = []
    for n_img in (64, 512):
        acts = rng.standard_normal((n_img, 4, 8, 8)).astype(np.float16)
        tq = TopQuantile(4, 0.05, n_img * 64, memory_budget=4 * 100 * 2)  # keep alone needs more
        peak = 0
        for lo in range(0, n_img, 32):
            tq.add(torch.from_numpy(acts[lo:lo + 32]))
            peak = max(peak, tq.held_bytes())
        assert tq.method == "histogram"
        np.testing.assert_array_equal(tq.thresholds().numpy(), numpy_thresholds(acts, 0.05).astype(np.float32))
        held.append(peak)
    assert held[0] == held[1]
    # and the stream method holds U x (keep + slack) values of the input dtype (2 bytes for float16)
    tq = TopQuantile(4, 0.05, 512 * 64)
    tq.add(torch.from_numpy(np.zeros((1, 4, 8, 8), np.float16)))
    assert tq.buf.dtype == torch.int16 and tq.buf.shape == (4, tq.keep + tq.slack)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_one_map_larger_than_the_slack(monkeypatch, dtype):
    """Few images of a large map: one image holds more values per unit than the buffer's slack (here
    40 x 40 = 1,600 > 1,024); they were written past each unit's row (IndexError for the last unit,
    silently into the next unit's row for the others). Oracle: np.quantile."""
    monkeypatch.setattr(qmod, "_STEP", 64)
    acts = data(9, (3, 6, 40, 40), dtype)
    acts[:, 0] = np.sort(acts[:, 0].ravel()).reshape(acts[:, 0].shape)  # rising: every slice displaces
    for q in (0.005, 0.3):
        tq = TopQuantile(6, q, total_count=3 * 1600)
        assert tq.slack < 1600
        got = feed(tq, acts, [0, 2, 3])
        assert tq.method == "stream"
        np.testing.assert_array_equal(got, numpy_thresholds(acts, q).astype(np.float32))
        assert int(tq.fill.max()) <= tq.cap
