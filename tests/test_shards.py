"""WebDataset shards of a store (broden export --webdataset; broden_builder.store.shards): any WebDataset
reader sees every row once with the store's bytes; dissect on the shard pattern gives the folder store's
result; a damaged, missing or extra shard is refused by name; DataLoader workers read every row once."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from broden_builder import BrodenStore
from broden_builder.cli import main as broden
from broden_builder.store.errors import StoreFormatError
from dissect.cli import main as dissect

wds = pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def shards(synthetic_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wds") / "shards"
    assert broden(["export", str(synthetic_store), "--webdataset", str(out), "--shard-size", "16"]) == 0
    return out


def _spec(folder: Path, n: int) -> str:
    return f"{folder}/shard-{{000000..{n - 1:06d}}}.tar"


def test_any_webdataset_reader_sees_every_row_once(synthetic_store, shards):
    store = BrodenStore(synthetic_store)
    doc = json.loads((shards / "shards.json").read_text())
    assert [s["count"] for s in doc["shards"]] == [16, 16, 16, 12]  # 60 rows, 16 a shard
    seen = []
    for sample in wds.WebDataset(_spec(shards, 4), shardshuffle=False):
        row = int(sample["__key__"])
        seen.append(row)
        assert sample["jpg"] == store.image_path(row).read_bytes()
        meta = json.loads(sample["json"])
        assert meta["image"] == store.rows[row].image
        files = [p for c in store.categories if c not in store.image_level_categories for p in store.rows[row].cells[c]]
        assert [sample[f"f{j}.png"] for j in range(len(files))] == [store.resolve(p, row).read_bytes() for p in files]
    assert seen == list(range(len(store)))


def test_shard_store_reads_what_the_folder_store_holds(synthetic_store, shards):
    folder, sharded = BrodenStore(synthetic_store), BrodenStore(_spec(shards, 4))
    assert type(sharded).__name__ == "ShardStore" and sharded.fingerprint() == folder.fingerprint()
    for i in (0, 15, 16, 59):
        np.testing.assert_array_equal(sharded.load_image(i), folder.load_image(i))
        for c in folder.pixel_categories:
            for a, b in zip(sharded.pixel_layers(i, c), folder.pixel_layers(i, c)):
                np.testing.assert_array_equal(a, b)


def test_workers_read_every_row_once(shards):
    from broden_builder.torch_dataset import BrodenDataset

    ds = BrodenDataset(_spec(shards, 4), with_images=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    rows = sorted(item["index"] for item in loader)
    assert rows == list(range(60))


def test_dissect_on_shards_equals_folder(synthetic_store, shards, tmp_path):
    n = len(BrodenStore(synthetic_store))
    np.save(tmp_path / "a.npy", np.random.default_rng(1).random((n, 5, 4, 4), dtype=np.float32))
    outs = {}
    for name, store in (("folder", str(synthetic_store)), ("shards", _spec(shards, 4))):
        out = tmp_path / name
        assert dissect(["score", "--store", store, "--activations", str(tmp_path / "a.npy"), "--out", str(out),
                        "--quiet", "--workers", "2", "--batch-size", "8", "--device", "cpu", "--no-label-cache"]) == 0
        outs[name] = out / "a"
    assert (outs["folder"] / "tally.csv").read_text() == (outs["shards"] / "tally.csv").read_text()
    np.testing.assert_array_equal(np.load(outs["folder"] / "iou.npy"), np.load(outs["shards"] / "iou.npy"))
    assert (outs["shards"] / "index.html").exists() or any(outs["shards"].parent.glob("*.html"))


def test_damaged_missing_or_extra_shard_is_refused(shards, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    with pytest.raises(StoreFormatError, match="does not name 1 shard"):
        BrodenStore(_spec(bad, 3))
    with pytest.raises(StoreFormatError, match="lacks"):
        BrodenStore(f"{bad}/shard-{{000000..000004}}.tar")
    p = bad / "shard-000002.tar"
    data = bytearray(p.read_bytes())
    data[2000] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(StoreFormatError, match="shard-000002.tar.*sha256"):
        BrodenStore(_spec(bad, 4))


def test_export_refuses_non_empty_folder_and_bad_size(synthetic_store, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert broden(["export", str(synthetic_store), "--webdataset", str(tmp_path / "full")]) != 0
    assert "not empty" in capsys.readouterr().err
    assert broden(["export", str(synthetic_store), "--webdataset", str(tmp_path / "z"), "--shard-size", "0"]) != 0
    assert "shard-size" in capsys.readouterr().err


def test_the_shard_folder_itself_names_its_shard_list(synthetic_store, shards, tmp_path, capsys):
    """--store DIR (the export folder, a natural guess) is refused when opened, naming the shard list to
    give (the synthetic store's 60 rows in shards of 16: 4 shards), not after pass 1 with a missing PNG."""
    n = len(BrodenStore(synthetic_store).rows)
    last = f"{(n + 15) // 16 - 1:06d}"
    with pytest.raises(StoreFormatError, match=rf"shard set written by `broden export`.*shard-\{{000000\.\.{last}\}}\.tar"):
        BrodenStore(shards)
    np.save(tmp_path / "a.npy", np.zeros((n, 2, 1, 1), np.float32))
    assert dissect(["score", "--store", str(shards), "--activations", str(tmp_path / "a.npy"),
                    "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert f"shard-{{000000..{last}}}.tar" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "a").exists()


def test_validate_checks_a_shard_list(shards, tmp_path, capsys):
    """`broden validate 'DIR/shard-{...}.tar'` checks every shard against shards.json (it said 'store
    directory does not exist'); a damaged shard is named."""
    n = len(json.loads((shards / "shards.json").read_text())["shards"])
    assert broden(["validate", _spec(shards, n)]) == 0
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    p = bad / "shard-000001.tar"
    data = bytearray(p.read_bytes())
    data[1500] ^= 0xFF
    p.write_bytes(bytes(data))
    capsys.readouterr()
    assert broden(["validate", _spec(bad, n)]) != 0
    out = capsys.readouterr().out
    assert "shard-000001.tar" in out and "sha256" in out and "INVALID" in out


def test_export_says_its_progress_off_a_terminal(synthetic_store, tmp_path):
    from broden_builder.progress import progress_to

    got = []
    with progress_to(got.append):
        assert broden(["export", str(synthetic_store), "--webdataset", str(tmp_path / "s"), "--shard-size", "16"]) == 0
    lines = [e.text for e in got if not isinstance(e, str) and e.desc == "export"]
    n = len(json.loads((tmp_path / "s" / "shards.json").read_text())["shards"])
    assert lines[0] == f"export: start, {n} shards" and any(t.startswith(f"export: {n}/{n} shards (100%)") for t in lines)
