"""The one label-PNG decoder (broden_builder.store.format.read_label_png): every PNG kind gives the
label numbers that were written (R + 256 * G for colour, the value for greyscale), whichever
decoder (OpenCV for 8-bit RGB/RGBA, PIL otherwise) reads it."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import broden_builder.store.format as fmt

RNG = np.random.default_rng(11)
LABELS = RNG.integers(0, 1400, size=(23, 31))  # numbers above 255 need the G channel
LABELS[0, :3] = (0, 255, 256)


def _rgb(labels):
    return np.stack([labels % 256, labels // 256, RNG.integers(0, 256, labels.shape)], -1).astype(np.uint8)  # B is noise


def _write(path, kind):
    if kind == "rgb":
        Image.fromarray(_rgb(LABELS), "RGB").save(path)
    elif kind == "rgba":
        a = np.concatenate([_rgb(LABELS), RNG.integers(0, 256, LABELS.shape + (1,)).astype(np.uint8)], -1)
        Image.fromarray(a, "RGBA").save(path)
    elif kind == "rgb_gamma":  # ancillary chunks must not change the numbers
        info = PngImagePlugin.PngInfo()
        info.add(b"gAMA", (45455).to_bytes(4, "big"))
        Image.fromarray(_rgb(LABELS), "RGB").save(path, pnginfo=info)
    elif kind == "rgb_interlaced":  # neither PIL nor OpenCV writes Adam7: written by hand
        _write_interlaced(path, _rgb(LABELS))
    elif kind == "palette":
        small = LABELS % 200
        im = Image.fromarray(small.astype(np.uint8), "P")
        pal = np.zeros((256, 3), np.uint8)
        pal[:, 0] = np.arange(256)  # index i -> R = i, G = 0
        im.putpalette(pal.ravel().tolist())
        im.save(path)
        return small
    elif kind == "grey8":
        Image.fromarray((LABELS % 256).astype(np.uint8), "L").save(path)
        return LABELS % 256
    elif kind == "grey16":
        Image.fromarray(LABELS.astype(np.uint16)).save(path)
    return LABELS


def _write_interlaced(path, rgb):
    """An Adam7-interlaced 8-bit RGB PNG written from the spec (PNG sec. 8.2), filter type 0."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b""
    for y0, x0, dy, dx in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["rgb", "rgba", "rgb_gamma", "rgb_interlaced", "palette", "grey8", "grey16"])
def test_every_kind_reads_the_numbers_written(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    expected = _write(path, kind)
    got = fmt.read_label_png(path, LABELS.shape)
    assert got.dtype == np.int32 and np.array_equal(got, expected), kind
    fast = fmt._read_rgb8_label_png(path, LABELS.shape)
    assert (fast is not None) == kind.startswith("rgb")  # OpenCV takes exactly the 8-bit colour files
    if fast is not None:
        assert np.array_equal(fast, expected)


def test_fast_path_leaves_errors_to_the_checked_path(tmp_path):
    """A wrong size, a truncated file and a non-PNG go through PIL's checks and messages."""
    path = tmp_path / "a.png"
    _write(path, "rgb")
    with pytest.raises(ValueError, match="is 31x23, index.csv says 30x23"):
        fmt.read_label_png(path, (23, 30))
    data = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError):
        fmt.read_label_png(tmp_path / "cut.png", LABELS.shape)
    (tmp_path / "x.png").write_bytes(b"not a png at all, just text")
    with pytest.raises(OSError):
        fmt.read_label_png(tmp_path / "x.png")
    with pytest.raises(OSError):
        fmt.read_label_png(tmp_path / "missing.png")


def test_a_broken_file_is_reported_once(tmp_path, capfd):
    """OpenCV's warning line for a truncated file is silenced; PIL's error is the one report."""
    path = tmp_path / "a.png"
    _write(path, "rgb")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError):
        fmt.read_label_png(path, LABELS.shape)
    out, err = capfd.readouterr()
    assert out == "" and err == "", err
