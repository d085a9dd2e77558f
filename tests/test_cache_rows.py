"""NpyRows reads and writes .npy rows exactly like numpy does, without memory-mapping."""
import pickle

import numpy as np
import pytest

from dissect.engine._activations import NpyRows


def test_rows_read_like_numpy(tmp_path):
    a = np.random.default_rng(0).normal(size=(7, 3, 2, 2)).astype(np.float16)
    p = tmp_path / "a.npy"
    np.save(p, a)
    r = NpyRows(p)
    assert r.shape == a.shape and r.dtype == a.dtype and len(r) == 7
    assert (r[3] == a[3]).all() and (r[-1] == a[-1]).all()
    assert (r[2:6] == a[2:6]).all() and (r[::3] == a[::3]).all()
    assert (r[[5, 0, 5]] == a[[5, 0, 5]]).all()
    with pytest.raises(IndexError):
        r[7]
    assert (pickle.loads(pickle.dumps(r))[1:3] == a[1:3]).all()


def test_rows_write(tmp_path):
    p = tmp_path / "b.npy"
    np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(4, 5))
    w = NpyRows(p, writable=True)
    block = np.arange(10, dtype=np.float32).reshape(2, 5)
    w[1:3] = block
    w.close()
    back = np.load(p)
    assert (back[1:3] == block).all() and (back[0] == 0).all()
    with pytest.raises(ValueError, match="cannot write"):
        NpyRows(p, writable=True)[0:1] = block
    with pytest.raises(TypeError):
        NpyRows(p)[0:2] = block


def test_truncated_file_is_reported(tmp_path):
    p = tmp_path / "c.npy"
    np.save(p, np.zeros((10, 100), np.float32))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 500])
    with pytest.raises(ValueError):
        NpyRows(p)[9]
