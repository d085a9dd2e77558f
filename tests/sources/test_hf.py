"""The ``hf`` source offline: a saved Hugging Face dataset and parquet files made here (no hub access)."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from broden_builder.build import build_store
from broden_builder.recipe import recipe_from_dict
from broden_builder.sources import SourceDataError, SourceMissingError, get_source_class
from broden_builder.store.reader import BrodenStore
from broden_builder.store.validate import validate_store
from dummy_images import H, W


# ----------------------------------------------------------------------------- Hugging Face
def test_hf_saved_dataset_masks_and_labels(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    imgs, masks, truth, scenes = [], [], [], []
    for i in range(6):
        imgs.append(Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)))
        m = np.zeros((H, W), np.uint8)
        m[: 10 + 4 * i] = 1
        m[30:, 40:] = 2
        m[0, :] = 255                      # an 'ignore' value, declared unlabeled below
        masks.append(Image.fromarray(m))
        truth.append(m)
        scenes.append(i % 2)
    feats = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(),
                               "scene": datasets.ClassLabel(names=["beach", "forest"])})
    ds = datasets.Dataset.from_dict({"image": imgs, "mask": masks, "scene": scenes}, features=feats)
    ds.save_to_disk(str(tmp_path / "saved"))
    common = {"type": "hf", "dataset": str(tmp_path / "saved"), "split": "train"}
    src = get_source_class("hf")({**common, "mask_column": "mask", "names": {1: "sky", 2: "car"}, "unlabeled": [0, 255]})
    src.check()
    code = {n[0]: c for c, n in src.vocabulary()["object"].items()}
    for rec, m in zip(src.records(), truth):
        plane = src.resolve(rec).pixel["object"][0]
        assert np.array_equal(plane == code["sky"], m == 1) and np.array_equal(plane == code["car"], m == 2)
        assert np.array_equal(plane == 0, (m == 0) | (m == 255))
    # a value with no name (255 not declared unlabeled) names the dataset and the row
    bad = get_source_class("hf")({**common, "mask_column": "mask", "names": ["background", "sky", "car"]})
    with pytest.raises(SourceDataError, match=r"saved \(split train\): row 0 column 'mask': mask value 255 has no name"):
        bad.resolve(bad.records()[0])
    # image-level labels from the ClassLabel, through a whole build
    recipe = recipe_from_dict({"size": 32, "segmentation_size": 16, "min_frequency": 1, "min_coverage": 0, "color": False,
                               "sources": [{**common, "label_column": "scene", "category": "scene"}]})
    build_store(recipe, tmp_path / "store", quiet=True)
    assert validate_store(tmp_path / "store") == []
    st = BrodenStore(tmp_path / "store")
    names = [st.label_by_number[st.image_labels(r.index, "scene")[0]].name for r in sorted(st.rows, key=lambda r: r.image)]
    assert names == ["beach-s", "forest-s"] * 3


def test_hf_parquet_and_unreachable_hub_id(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 6), (i * 40, 0, 0)) for i in range(3)],
                                     "tag": ["a", "b", "a"]}, features=datasets.Features({"image": datasets.Image(), "tag": datasets.Value("string")}))
    ds.to_parquet(str(tmp_path / "d.parquet"))
    src = get_source_class("hf")({"type": "hf", "dataset": str(tmp_path / "d.parquet"), "label_column": "tag", "category": "tag"})
    src.check()
    assert sorted(src.vocabulary()["tag"].values()) == [("a",), ("b",)]
    res = src.resolve(src.records()[1])
    assert res.image.shape == (6, 8, 3) and [src.vocabulary()["tag"][c] for c in res.image_level["tag"]] == [("b",)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    hub = get_source_class("hf")({"type": "hf", "dataset": "someone/not-cached-anywhere", "mask_column": "m"})
    with pytest.raises(SourceMissingError, match=r"someone/not-cached-anywhere.*give a local path"):
        hub.check()


def test_a_missing_column_is_named_by_both_dataset_readers(tmp_path):
    """The hf source and the segmenter's dataset images refuse a column the dataset lacks, naming it and
    the columns there are (one check, hf.source.open_dataset, serves both)."""
    datasets = pytest.importorskip("datasets")
    from broden_builder.sources.segmenter.images import DatasetImages

    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 6))], "tag": ["a"]},
                                    features=datasets.Features({"image": datasets.Image(), "tag": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "saved"))
    hf = get_source_class("hf")({"type": "hf", "dataset": str(tmp_path / "saved"), "split": "train",
                                 "label_column": "scene", "category": "scene"})
    with pytest.raises(SourceDataError, match=r"no column 'scene'; columns are \['image', 'tag'\]"):
        hf.check()
    images = DatasetImages({"dataset": str(tmp_path / "saved"), "image_column": "picture"})
    with pytest.raises(SourceDataError, match=r"no column 'picture'; columns are \['image', 'tag'\]"):
        images.check()
