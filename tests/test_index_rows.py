"""A store whose index.csv has a row longer than its header, or a split other than train/val, is
refused by every reader with the file and row named (docs/format.md, index.csv), while
`broden validate` still lists it among every other problem. Oracle: the rows edited by hand here."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from broden_builder import BrodenStore, StoreFormatError
from broden_builder.store.validate import validate_store


def _edited(synthetic_store, tmp_path, edit):
    root = tmp_path / "s"
    shutil.copytree(synthetic_store, root, ignore=shutil.ignore_patterns(".cache"))
    lines = (root / "index.csv").read_text().splitlines()
    lines[3] = edit(lines[3])  # the third data row: row 3 as the reader counts
    (root / "index.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("edit,why", [
    (lambda line: line + ",extra", "cells, the header"),
    (lambda line: ",".join([line.split(",")[0], "test", *line.split(",")[2:]]), "split 'test' is not one of train, val"),
])
def test_reader_refuses_and_validate_lists(synthetic_store, tmp_path, capsys, edit, why):
    root = _edited(synthetic_store, tmp_path, edit)
    with pytest.raises(StoreFormatError) as e:
        BrodenStore(root)
    assert why in str(e.value) and "index.csv" in str(e.value) and "3" in str(e.value)
    problems = validate_store(root)
    assert any(p.file == "index.csv" and p.row == 3 and why.split(" (")[0].split("'")[0] in p.message
               for p in problems), problems
    from dissect.cli import main

    n = len(BrodenStore(synthetic_store).rows)
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((n, 2, 2, 2), dtype=np.float32))
    rc = main(["score", "--store", str(root), "--activations", str(tmp_path / "a.npy"), "--out",
               str(tmp_path / "o"), "--quiet", "--no-report", "--workers", "0"])
    err = capsys.readouterr().err
    assert rc != 0 and why in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
