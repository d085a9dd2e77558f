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


def _chunk(kind: bytes, data: bytes, crc=None) -> bytes:
    import struct
    import zlib

    crc = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _odd_png(before: bytes = b"", idat_crc=None, iend: bool = True) -> bytes:
    """An 8-bit RGB PNG of LABELS written from the spec with extra chunks before IDAT."""
    import struct
    import zlib

    rgb = _rgb(LABELS)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + before
            + _chunk(b"IDAT", zlib.compress(raw), idat_crc) + (_chunk(b"IEND", b"") if iend else b""))


def _pil_labels(path):
    """The oracle: PIL itself, R + 256 * G of the RGB conversion."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


ODD = {
    "bad_crc_text": _odd_png(_chunk(b"tEXt", b"Comment\0hi", crc=0)),  # PIL refuses it
    "bad_crc_idat": _odd_png(idat_crc=0),  # PIL reads it (IDAT CRCs unchecked); libpng: 'CRC error'
    "bad_iccp": _odd_png(_chunk(b"iCCP", b"x\0\0" + b"junk")),  # libpng: 'iCCP: too short'
    "srgb_gamma": _odd_png(_chunk(b"sRGB", b"\0") + _chunk(b"gAMA", (45455).to_bytes(4, "big"))),
    "gamma_zero": _odd_png(_chunk(b"gAMA", bytes(4))),  # libpng: gamma out of range
    "sbit": _odd_png(_chunk(b"sBIT", bytes([5, 6, 5]))),
    "time_bad": _odd_png(_chunk(b"tIME", bytes([7, 230, 13, 1, 0, 0, 0]))),  # month 13
    "unknown_critical": _odd_png(_chunk(b"ABCD", b"xx")),
    "no_iend": _odd_png(iend=False),
    "text_trns_time": _odd_png(_chunk(b"tEXt", b"Software\0x") + _chunk(b"tRNS", bytes(6))
                               + _chunk(b"tIME", bytes([7, 230, 11, 30, 10, 5, 0]))),
}


@pytest.mark.parametrize("kind", sorted(ODD))
def test_odd_chunks_decode_as_pil_does_and_silently(tmp_path, capfd, kind):
    """Chunks around the image data: the result is PIL's (its values, or its refusal) and nothing is
    printed (libpng prints a line for a bad CRC, a bad profile, an invalid value, a missing IEND, an
    unknown critical chunk: such files go to PIL). The OpenCV path accepted a bad CRC that PIL refuses."""
    path = tmp_path / f"{kind}.png"
    path.write_bytes(ODD[kind])
    try:
        expected = _pil_labels(path)
    except Exception as e:  # PIL refuses: so must we
        with pytest.raises(type(e)):
            fmt.read_label_png(path, LABELS.shape)
    else:
        got = fmt.read_label_png(path, LABELS.shape)
        assert np.array_equal(got, expected), kind
    assert kind != "text_trns_time" or fmt._read_rgb8_label_png(path, LABELS.shape) is not None  # fast
    out, err = capfd.readouterr()
    assert out == "" and err == "", err


def test_opencv_log_level_restored_after_concurrent_decodes():
    """Threads decoding at once (the report's strips) each silenced OpenCV's process-wide log level
    and restored what it saw, so an overlap could leave it silenced for good."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    log = cv2.utils.logging
    before = log.getLogLevel()
    data = _odd_png()
    try:
        log.setLogLevel(log.LOG_LEVEL_WARNING)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: fmt._cv2_decode(data), range(400)))
        assert all(r is not None for r in results)
        assert log.getLogLevel() == log.LOG_LEVEL_WARNING
    finally:
        log.setLogLevel(before)


def _palette_png(path, n_entries: int, trns: bool) -> None:
    """A palette PNG (indices 0..255 over LABELS) with ``n_entries`` palette entries (indices past
    them are out of the palette) and optionally a tRNS chunk of alpha bytes."""
    import struct
    import zlib

    idx = (LABELS % 256).astype(np.uint8)
    h, w = idx.shape
    pal = np.stack([np.arange(256), (np.arange(256) * 7) % 5, np.zeros(256)], -1).astype(np.uint8)[:n_entries]
    before = _chunk(b"PLTE", pal.tobytes()) + (_chunk(b"tRNS", bytes(i * 2 % 256 for i in range(n_entries)))
                                                if trns else b"")
    raw = b"".join(b"\x00" + row.tobytes() for row in idx)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)) + before
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("n_entries,trns", [(256, True), (100, True), (40, False)])
def test_palette_pngs_decode_as_pil_converts_them_without_a_warning(tmp_path, n_entries, trns):
    """Palette labels equal PIL's convert("RGB") (R + 256 * G; indices past a short palette black),
    and no warning is printed (convert warned 'Palette images with Transparency expressed in bytes
    should be converted to RGBA images' once per process for a palette with tRNS)."""
    import warnings

    path = tmp_path / "p.png"
    _palette_png(path, n_entries, trns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _pil_labels(path)  # the oracle: PIL itself
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = fmt.read_label_png(path, LABELS.shape)
    assert got.dtype == np.int32 and np.array_equal(got, expected)
    assert not seen, [str(w.message) for w in seen]
