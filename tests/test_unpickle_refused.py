"""Nothing runs on load (issue 25, kind 1): every loader of a user file refuses a planted pickle.

Each case plants a real pickle whose load calls ``os.system`` to create a marker file, in a
real archive made by torch itself (``torch.export.save``, ``torch.jit.save``, ``torch.save``,
``np.save``). Oracle: the marker file. For ``.pt2`` the test first proves the trap fires
(``torch.export.load`` itself, and ``--unsafe-unpickle``, create the marker), so that its absence
without the flag means the refusal, not a dud trap.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO


def _planted(marker: Path) -> bytes:
    """A protocol-0 pickle that calls os.system('touch MARKER') when loaded."""
    return b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.a(x).mean((2, 3))


def _evil_pt2(tmp_path: Path, marker: Path) -> Path:
    """A real torch.export archive whose data/sample_inputs/model.pt is the planted pickle."""
    ep = torch.export.export(_Net().eval(), (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    good = tmp_path / "net.pt2"
    torch.export.save(ep, str(good))
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as zi, zipfile.ZipFile(evil, "w") as zo:
        names = zi.namelist()
        assert any(n.endswith("data/sample_inputs/model.pt") for n in names), names
        for n in names:
            zo.writestr(n, _planted(marker) if n.endswith("data/sample_inputs/model.pt") else zi.read(n))
    return evil


def _dissect(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "dissect.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_planted_pt2_really_fires(tmp_path):
    marker = tmp_path / "FIRED"
    evil = _evil_pt2(tmp_path, marker)
    try:
        torch.export.load(str(evil))
    except Exception:
        pass
    assert marker.exists(), "the trap must fire through torch.export.load, or the refusal tests prove nothing"


@pytest.mark.parametrize("command", ["layers", "run"])
def test_pt2_is_refused_without_unsafe_unpickle(tmp_path, synthetic_store, command):
    marker = tmp_path / "FIRED"
    evil = _evil_pt2(tmp_path, marker)
    args = ["layers", "--model", str(evil)] if command == "layers" else \
        ["run", "--store", str(synthetic_store), "--model", str(evil), "--layer", "a", "--out", str(tmp_path / "out")]
    p = _dissect(*args, cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert not marker.exists(), "the planted pickle ran"
    assert "Traceback" not in p.stderr and "this is a bug" not in p.stderr
    assert str(evil) in p.stderr and "--unsafe-unpickle" in p.stderr and "pickle" in p.stderr
    assert len([ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]) == 1, p.stderr


def test_pt2_with_unsafe_unpickle_is_the_users_choice(tmp_path):
    marker = tmp_path / "FIRED"
    evil = _evil_pt2(tmp_path, marker)
    _dissect("layers", "--model", str(evil), "--unsafe-unpickle", cwd=tmp_path)
    assert marker.exists()  # opted in: loaded as torch.export.load does


def test_torchscript_with_a_planted_data_pkl_is_refused_without_running_it(tmp_path):
    """TorchScript's own unpickler only builds TorchScript types: no flag is needed, and nothing runs."""
    marker = tmp_path / "FIRED"
    good = tmp_path / "net.ts"
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.trace(_Net().eval(), torch.zeros(1, 3, 16, 16)), str(good))
    evil = tmp_path / "evil.ts"
    with zipfile.ZipFile(good) as zi, zipfile.ZipFile(evil, "w") as zo:
        for n in zi.namelist():
            zo.writestr(n, _planted(marker) if n.endswith("/data.pkl") else zi.read(n))
    p = _dissect("layers", "--model", str(evil), cwd=tmp_path)
    assert p.returncode == 1 and not marker.exists(), p.stderr
    assert "Traceback" not in p.stderr and str(evil) in p.stderr


def test_checkpoint_activation_and_basis_pickles_never_run(tmp_path, synthetic_store):
    marker = tmp_path / "FIRED"
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(_planted(marker))
    p = _dissect("layers", "--model", "resnet18", "--weights", str(ckpt), cwd=tmp_path)
    assert p.returncode == 1 and not marker.exists() and "Traceback" not in p.stderr, p.stderr
    # a torch.save'd zip checkpoint whose data.pkl is the planted pickle
    real = tmp_path / "real.pth"
    torch.save({"w": torch.zeros(1)}, real)
    zck = tmp_path / "zip.pth"
    with zipfile.ZipFile(real) as zi, zipfile.ZipFile(zck, "w") as zo:
        for n in zi.namelist():
            zo.writestr(n, _planted(marker) if n.endswith("/data.pkl") else zi.read(n))
    p = _dissect("layers", "--model", "resnet18", "--weights", str(zck), cwd=tmp_path)
    assert p.returncode == 1 and not marker.exists() and "Traceback" not in p.stderr, p.stderr
    # activations (.pt) and an object-array basis (.npy pickles its objects)
    acts = tmp_path / "acts.pt"
    acts.write_bytes(_planted(marker))
    p = _dissect("score", "--store", str(synthetic_store), "--activations", str(acts), "--out", str(tmp_path / "o"),
                 cwd=tmp_path)
    assert p.returncode == 1 and not marker.exists() and "Traceback" not in p.stderr, p.stderr
    basis = tmp_path / "basis.npy"
    with open(basis, "wb") as f:  # an object-array .npy header followed by the planted pickle
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (2, 4)})
        f.write(_planted(marker))
    p = _dissect("run", "--store", str(synthetic_store), "--model", "resnet18", "--weights", "none",
                 "--layer", "layer1", "--basis", str(basis), "--out", str(tmp_path / "o2"), cwd=tmp_path)
    assert p.returncode == 1 and not marker.exists(), p.stderr
    assert "Traceback" not in p.stderr and "allow_pickle" not in p.stderr and str(basis) in p.stderr, p.stderr
