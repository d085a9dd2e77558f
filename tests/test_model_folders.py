"""An ``hf:REF`` meant as a local folder that is not there is named as a missing folder, by every
loader of such specs (dissect run's models, describe's image-text models, the segmenter source), instead
of being looked up as a hub id whose save-it-once hint would then name the path as a model id."""
from __future__ import annotations

from pathlib import Path

import pytest

from broden_builder.shared import missing_model_folder


@pytest.mark.parametrize("ref, meant", [
    ("./clip", True), ("/no/such/clip", True), ("~/no-such-clip", True), ("clip-b32", False),
    ("a/b/c", True), ("models.v2/clip", False), ("openai/clip-vit-base-patch32", False),
    ("weights.bin", True),
])
def test_which_refs_mean_a_folder(ref, meant, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (missing_model_folder(ref) is not None) == meant


def test_a_ref_under_an_existing_local_folder_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert missing_model_folder("models/clip-b32") is None  # no models/ here: could be a hub id
    (tmp_path / "models").mkdir()
    assert missing_model_folder("models/clip-b32") == Path("models/clip-b32")
    (tmp_path / "models" / "clip-b32").mkdir()
    assert missing_model_folder("models/clip-b32") is None  # there: not missing


def test_every_loader_names_the_missing_folder(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from broden_builder.sources import SourceMissingError
    from broden_builder.sources.segmenter.models import load_segmenter
    from dissect.capture import load_model
    from dissect.describe import load_image_text
    from dissect.errors import DissectError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(DissectError, match=r"--clip hf:models/clip-b32: folder models/clip-b32 not found$"):
        load_image_text("hf:models/clip-b32", "cpu")
    with pytest.raises(DissectError, match=r"hf:models/vit: folder models/vit does not exist"):
        load_model("hf:models/vit")
    with pytest.raises(SourceMissingError, match=r"model hf:models/seg: folder models/seg not found"):
        load_segmenter("hf:models/seg", "cpu")
