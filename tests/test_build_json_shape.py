"""A malformed build.json is a named error in every command, never "unexpected AttributeError".

build.json is read from the store (which may come from elsewhere or be hand-edited). Oracle:
JSON texts of the wrong shape, each written by hand, for the keys the readers rely on.
"""
from __future__ import annotations

import shutil

import pytest

from broden_builder.cli import main as broden

BAD = ["[1, 2]", '"text"', "null", '{"written_statistics": [1]}', '{"written_statistics": {"object": 5}}',
       '{"written_statistics": {"3": {"object": [1, "x"]}}}', '{"recipe": [1]}',
       '{"image_level_categories": [1]}', '{"additions": 5}']


@pytest.mark.parametrize("text", BAD)
@pytest.mark.parametrize("command", ["validate", "stats", "find", "add"])
def test_malformed_build_json_is_a_named_error(synthetic_store, tmp_path, capsys, text, command):
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    (store / "build.json").write_text(text)
    entry = tmp_path / "e.yaml"
    entry.write_text("type: synthetic\ncount: 2\nprefix: more\n")
    argv = {"validate": ["validate", str(store)], "stats": ["stats", str(store)],
            "find": ["find", str(store), "1"], "add": ["add", str(store), "--source", str(entry)]}[command]
    assert broden(argv) == 1
    captured = capsys.readouterr()
    text_out = captured.out + captured.err
    assert "build.json" in text_out
    assert "unexpected" not in text_out and "Traceback" not in text_out
