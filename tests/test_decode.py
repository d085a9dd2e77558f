"""One image decoder for every source: bit depths, float images, modes, EXIF; values worked out by hand."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from broden_builder.sources import BadSourceItem
from broden_builder.sources.decode import decode_image, load_image

# 16-bit values and their 8-bit values by hand: round(v * 255 / 65535) = round(v / 257)
SIXTEEN = [(0, 0), (257, 1), (32768, 128), (65535, 255), (1000, 4)]


def test_16bit_png_and_tiff_are_scaled_by_bit_depth(tmp_path):
    vals = np.array([[v for v, _ in SIXTEEN]], dtype=np.uint16)
    want = np.array([[w for _, w in SIXTEEN]], dtype=np.uint8)
    for name in ("g16.png", "g16.tif"):
        path = tmp_path / name
        Image.fromarray(vals).save(path)
        with Image.open(path) as im:
            assert im.mode.startswith("I")  # a real 16-bit file
        got = load_image(path)
        assert got.shape == (1, 5, 3) and got.dtype == np.uint8
        assert (got == want[..., None]).all(), (name, got[..., 0])
    assert (decode_image(vals, "array") == want[..., None]).all()


def test_float_images_are_scaled_not_black():
    a = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    # floor(x * 255 + 0.5): 0, 128 (127.5 rounds up), 255, 64 (63.75)
    assert decode_image(a, "x")[..., 0].tolist() == [[0, 128, 255, 64]]
    rgb = np.stack([a, a, a], axis=2).astype(np.float64)
    assert decode_image(rgb, "x")[0, :, 1].tolist() == [0, 128, 255, 64]
    assert decode_image(Image.fromarray(a, mode="F"), "x")[..., 2].tolist() == [[0, 128, 255, 64]]
    with pytest.raises(BadSourceItem, match=r"rec 7: float image values must lie in \[0, 1\] \(found 0\.\.2"):
        decode_image(a * 2, "rec 7")
    with pytest.raises(BadSourceItem, match="NaN"):
        decode_image(np.array([[np.nan, 0.5]]), "rec 8")


def test_modes_are_converted():
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert decode_image(pal, "p")[0].tolist() == [[0, 0, 0], [10, 20, 30]]
    assert decode_image(Image.new("LA", (1, 1), (100, 50)), "la")[0, 0].tolist() == [100, 100, 100]
    assert decode_image(Image.new("RGBA", (1, 1), (1, 2, 3, 0)), "rgba")[0, 0].tolist() == [1, 2, 3]
    assert decode_image(Image.new("CMYK", (1, 1), (0, 0, 0, 0)), "cmyk")[0, 0].tolist() == [255, 255, 255]
    assert decode_image(Image.new("L", (1, 1), 77), "l")[0, 0].tolist() == [77, 77, 77]
    assert decode_image(Image.new("1", (1, 1), 1), "1")[0, 0].tolist() == [255, 255, 255]
    assert decode_image(np.array([[True, False]]), "b")[0, :, 0].tolist() == [255, 0]
    assert decode_image(np.array([[3, 200]], dtype=np.int64), "i")[0, :, 0].tolist() == [3, 200]


def test_anything_else_is_refused_with_its_name(tmp_path):
    with pytest.raises(BadSourceItem, match=r"img\.npy: image array has shape \(3, 4, 5\)"):
        decode_image(np.zeros((3, 4, 5), np.uint8), "img.npy")
    with pytest.raises(BadSourceItem, match="row 3: int32 image values 0..300 are not 8-bit"):
        decode_image(np.array([[0, 300]], dtype=np.int32), "row 3")
    with pytest.raises(BadSourceItem, match="complex"):
        decode_image(np.zeros((2, 2), np.complex64), "c")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(BadSourceItem, match=r"bad\.png: cannot read image"):
        load_image(bad)
    with pytest.raises(BadSourceItem, match=r"gone\.jpg: file not found"):
        load_image(tmp_path / "gone.jpg")


def test_exif_orientation_only_when_asked(tmp_path):
    im = Image.new("RGB", (4, 2), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "o.jpg"
    im.save(path, exif=exif.tobytes())
    assert load_image(path).shape == (2, 4, 3)
    assert load_image(path, exif=True).shape == (4, 2, 3)


def test_a_16bit_image_is_stored_unsaturated(tmp_path):
    """End to end: a folder source's 16-bit grey PNG of value 32896 (128.5 * 256) is stored near 128, not 255."""
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((16, 16), 32896, np.uint16)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.full((16, 16), 32896, np.uint16)).save(tmp_path / "images" / "b.png")
    (tmp_path / "labels.csv").write_text("image,label\na.png,grey\nb.png,grey\n")
    recipe = recipe_from_dict({"size": 16, "segmentation_size": 8, "min_frequency": 1, "min_coverage": 0, "color": False,
                               "sources": [{"type": "folder", "images": str(tmp_path / "images"),
                                            "labels": str(tmp_path / "labels.csv"), "category": "tone"}]})
    build_store(recipe, tmp_path / "store", quiet=True)
    stored = np.asarray(Image.open(tmp_path / "store" / "images" / "folder" / "a.jpg").convert("RGB")).astype(int)
    # 32896 * 255 / 65535 = 128.0: a uniform image survives JPEG within a step or two
    assert abs(stored.mean() - 128) <= 2
