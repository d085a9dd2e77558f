"""An invalid YAML file (recipe, --config) is one line naming the file, line and column."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "text, where",
    [
        ("name: [unclosed\n", "line 2, column 1"),
        ("a: 1\n  b: 2\n", "line 2, column 4"),
        ("a: 'x\n", "line 2, column 1"),
    ],
)
def test_invalid_yaml_is_one_line_with_its_place(tmp_path, text, where):
    """Oracle: the line and column of the fault counted by hand in ``text`` (1-based)."""
    from broden_builder.recipe import RecipeError, read_yaml

    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        read_yaml(path, RecipeError)
    msg = str(info.value)
    assert "\n" not in msg and "<unicode string>" not in msg, msg
    assert msg.startswith(f"{path}: invalid YAML (") and where in msg, msg
