"""Bad input met inside a DataLoader worker is one clear line naming the file, never "killed from
outside" (which only a worker that vanished deserves) and never a bug.

torch re-raises a worker's exception as a RuntimeError "Caught NAME in DataLoader worker process K"
when NAME cannot be made from one string (StoreFormatError(path, message, row)). Oracles: the file
this test truncates or replaces by a FIFO, named in the message; a worker killed by SIGKILL.
"""
from __future__ import annotations

import os
import shutil
import signal

import pytest
from torch.utils.data import DataLoader, Dataset

from broden_builder.store.errors import StoreFormatError
from dissect.cli import main
from dissect.engine._passes import worker_failure
from dissect.errors import DissectError

MODEL = """
import torch.nn as nn
def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
"""


class _Raises(Dataset):
    def __init__(self, exc):
        self.exc = exc

    def __len__(self):
        return 2

    def __getitem__(self, i):
        if self.exc == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise self.exc


def _worker_error(exc) -> RuntimeError:
    with pytest.raises(RuntimeError) as info:
        list(DataLoader(_Raises(exc), num_workers=1))
    return info.value


def test_input_error_in_a_worker_is_its_message():
    err = worker_failure(_worker_error(StoreFormatError("s/images/a.jpg", "cannot read image", 7)), 1)
    assert isinstance(err, DissectError)
    assert str(err) == "s/images/a.jpg, row 7: cannot read image"


class Odd(Exception):
    """Not bad input, and not made from one string: arrives as torch's RuntimeError."""

    def __init__(self, a, b):
        super().__init__(f"{a} {b}")


def test_a_bug_in_a_worker_stays_a_bug():
    e = _worker_error(Odd("x", "y"))
    assert worker_failure(e, 1) is e


def test_a_killed_worker_is_said_killed():
    err = worker_failure(_worker_error("kill"), 2)
    assert isinstance(err, DissectError) and "killed from outside" in str(err)


@pytest.mark.parametrize("kind", ["truncated", "fifo"])
def test_run_names_a_bad_image_read_by_a_worker(synthetic_store, tmp_path, capsys, kind):
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    photo = sorted((store / "images").rglob("*.jpg"))[3]
    if kind == "truncated":
        photo.write_bytes(photo.read_bytes()[:400])
    else:
        photo.unlink()
        os.mkfifo(photo)
    model = tmp_path / "net.py"
    model.write_text(MODEL)
    rc = main(["run", "--store", str(store), "--model", f"{model}:build", "--layer", "1", "--out",
               str(tmp_path / "out"), "--workers", "1", "--quiet", "--no-report", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert photo.name in err, err
    assert "killed from outside" not in err and "Traceback" not in err and "this is a bug" not in err

