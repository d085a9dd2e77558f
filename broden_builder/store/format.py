"""Constants and small pure helpers of the Broden store format.

See docs/format.md ("Layout" to "c_<category>.csv") for the facts these encode.
"""

from __future__ import annotations

import hashlib
import re
import threading
import zlib
from contextlib import contextmanager
from typing import Iterable, Sequence

import numpy as np

INDEX_FIXED_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
LABEL_COLUMNS = ("number", "name", "category", "frequency", "coverage", "syns")
CATEGORY_COLUMNS = ("name", "first", "last", "count", "frequency")
CATEGORY_MAP_COLUMNS = ("code", "number", "name", "frequency", "coverage")

#: The six categories of Broden, in the order of the released index.csv.
BRODEN_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
#: Categories whose labels apply to the whole image (numbers in index.csv cells).
DEFAULT_IMAGE_LEVEL = frozenset({"scene", "texture"})

SPLITS = ("train", "val")


def split_hash(image_path: str) -> float:
    """The original deterministic split key: first 8 bytes of md5 as big-endian / 2**64."""
    digest = hashlib.md5(image_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_for(image_path: str, train_fraction: float = 0.7) -> str:
    """'train' when split_hash(image_path) <= train_fraction, else 'val'."""
    return "train" if split_hash(image_path) <= train_fraction else "val"


def decode_label_png(rgb: np.ndarray) -> np.ndarray:
    """Decode an H x W x 3 (or x 4) uint8 array into int32 labels R + 256 * G."""
    if rgb.ndim == 2:  # a greyscale PNG: the value is the label
        return rgb.astype(np.int32)
    return rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)


#: Most pixels a label PNG may claim in its header before it is decoded (a 30000 x 30000 header
#: is refused before any memory is spent). Generous: 4096 x 4096 is 16.8 M.
MAX_LABEL_PIXELS = 1 << 26


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header(data: bytes):
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk (PNG spec, sec. 11.2.2), or
    None when ``data`` does not start like a PNG."""
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), data[24], data[25]


#: Ancillary chunks the OpenCV path accepts, each with the check that keeps libpng quiet about it
#: (libpng 1.6 png_handle_*: a wrong length or value is a warning printed to stderr, and a chunk PIL
#: refuses must not be accepted here). Any other chunk sends the file to the PIL path.
def _text_ok(d: bytes) -> bool:
    return 1 <= d.find(b"\0") <= 79


_QUIET_CHUNKS = {
    b"tIME": lambda d: len(d) == 7 and 1 <= d[2] <= 12 and 1 <= d[3] <= 31 and d[4] <= 23 and d[5] <= 59 and d[6] <= 60,
    b"pHYs": lambda d: len(d) == 9,
    b"gAMA": lambda d: len(d) == 4 and 16 <= int.from_bytes(d, "big") <= 625000000,
    b"tEXt": _text_ok,
}


def _plain_png(data: bytes, colour_type: int) -> bool:
    """Whether ``data`` (a whole 8-bit RGB/RGBA PNG) is laid out so that OpenCV's libpng decodes it
    silently and PIL would accept it too (PNG spec, sec. 5.3-5.6): every chunk inside the file with
    its CRC right (PIL refuses a bad CRC before IDAT, libpng prints one line for any), IHDR first,
    then only :data:`_QUIET_CHUNKS` (and tRNS of 6 bytes for RGB), the IDAT chunks in one run, IEND
    last. Only the compressed stream itself is left to libpng: too much or too little image data,
    a bad filter byte or a broken deflate stream still print libpng's own line (the PIL path then
    decodes or refuses the file as before)."""
    pos, seen_idat, after_idat = 8, False, False
    while pos + 12 <= len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        end = pos + 12 + n
        if end > len(data) or zlib.crc32(data[pos + 4 : pos + 8 + n]) != int.from_bytes(data[end - 4 : end], "big"):
            return False
        if kind == b"IEND":
            return seen_idat and n == 0
        if kind == b"IDAT":
            if after_idat:
                return False
            seen_idat = True
        elif pos == 8:
            if kind != b"IHDR":
                return False
        else:
            after_idat = after_idat or seen_idat
            ok = _QUIET_CHUNKS.get(kind)
            trns = kind == b"tRNS" and colour_type == 2 and n == 6
            if not (trns or (ok is not None and ok(body))):
                return False
        pos = end
    return False


class _kept_open:
    """A caller's open file object used in a ``with`` block without closing it (the PIL path reads it next)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


def _read_rgb8_label_png(path, expected_shape) -> "np.ndarray | None":
    """The common case decoded with OpenCV: an 8-bit RGB or RGBA PNG (colour type 2 or 6), labels
    R + 256 * G. OpenCV decodes these about twice as fast as PIL (measured on store label PNGs,
    112 x 112: 112-198 us against 242-354 us, values identical), and pass 2 decodes every label
    PNG of the store. None for anything else (other modes, a header to refuse, a file laid out
    otherwise than :func:`_plain_png` accepts, undecodable data): the PIL path then decides, with
    its checks and messages."""
    with open(path, "rb") if not hasattr(path, "read") else _kept_open(path) as f:
        head = _png_header(f.read(33))
        f.seek(0)
        if head is None or head[2] != 8 or head[3] not in (2, 6):
            return None
        data = f.read() if head[0] * head[1] <= MAX_LABEL_PIXELS else b""
        f.seek(0)
    w, h = head[0], head[1]
    if (expected_shape is not None and (h, w) != tuple(expected_shape)) or w * h > MAX_LABEL_PIXELS:
        return None
    if not _plain_png(data, head[3]):
        return None
    bgr = _cv2_decode(data)
    if bgr is None or bgr.shape[:2] != (h, w) or bgr.ndim != 3 or bgr.dtype != np.uint8:
        return None
    return bgr[..., 2].astype(np.int32) + 256 * bgr[..., 1].astype(np.int32)


_LOG_LOCK = threading.Lock()
_LOG_STATE = {"depth": 0, "before": None}


def _cv2_decode(data: bytes):
    """cv2.imdecode(IMREAD_UNCHANGED) with OpenCV's own log silenced for the call (a broken file is
    reported once, by the PIL path, not also as an OpenCV warning line); None when it cannot decode.
    The log level is process-wide: the first of concurrent calls (threads) silences it and the last
    restores it, so overlapping calls cannot leave it silenced."""
    import cv2

    log = cv2.utils.logging
    with _LOG_LOCK:
        if _LOG_STATE["depth"] == 0:
            _LOG_STATE["before"] = log.getLogLevel()
            log.setLogLevel(log.LOG_LEVEL_SILENT)
        _LOG_STATE["depth"] += 1
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        with _LOG_LOCK:
            _LOG_STATE["depth"] -= 1
            if _LOG_STATE["depth"] == 0:
                log.setLogLevel(_LOG_STATE["before"])


def _palette_labels(im) -> np.ndarray:
    """R + 256 * G of each pixel's palette entry (indices past the palette read black, as with
    PIL's ``convert("RGB")``), looked up here because ``convert`` warns (a UserWarning line on
    stderr, once per process and DataLoader worker) for a palette with transparency."""
    pal = np.zeros((256, 3), np.int32)
    entries = np.asarray(im.getpalette("RGB") or [], np.int32).reshape(-1, 3)[:256]
    pal[: len(entries)] = entries
    rgb = pal[np.asarray(im)]
    return rgb[..., 0] + 256 * rgb[..., 1]


def read_label_png(path, expected_shape=None) -> np.ndarray:
    """Decode one segmentation PNG (a path, or a binary file object at its start) into H x W int32
    global label numbers.

    The one decoder of the format, shared by the reader and the validator, so both accept and refuse the same files:

    - RGB / RGBA / palette images: label = R + 256 * G (docs/format.md, "Pixel encoding"; B and alpha ignored);
    - greyscale (``L``, 16-bit ``I;16``, 32-bit ``I``): the value is the label, so a 16-bit
      PNG holding 1, 3, 5 reads 1, 3, 5 (not 257, 771, ... through an RGB conversion);
    - any other mode (float ``F``, ``1``, CMYK, ...) is refused.

    8-bit RGB/RGBA files are decoded by OpenCV (:func:`_read_rgb8_label_png`), everything else and
    every error case by PIL.

    ``expected_shape`` (H, W): the header size is checked against it before decoding.
    Raises ValueError (header size wrong or absurd, unsupported mode) or OSError (unreadable
    file); callers wrap either in a StoreFormatError naming the file and row.
    """
    fast = _read_rgb8_label_png(path, expected_shape)
    if fast is not None:
        return fast
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if expected_shape is not None and (h, w) != tuple(expected_shape):
            raise ValueError(f"is {w}x{h}, index.csv says {expected_shape[1]}x{expected_shape[0]}")
        if w * h > MAX_LABEL_PIXELS:
            raise ValueError(f"header claims {w}x{h} pixels, more than a segmentation can have ({MAX_LABEL_PIXELS})")
        load_whole(im)  # after the header checks: nothing absurd is decoded
        mode = im.mode
        if mode in ("L", "I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.int64) if mode != "L" else np.asarray(im)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise ValueError(f"{mode} PNG holds values outside 0..65535")
            return arr.astype(np.int32)
        if mode in ("RGB", "RGBA", "P", "PA", "LA"):
            if mode == "P":
                return _palette_labels(im)
            if mode == "LA":
                return np.asarray(im.convert("L")).astype(np.int32)
            rgb = np.asarray(im.convert("RGB") if mode != "RGB" else im)
            return decode_label_png(rgb)
        raise ValueError(f"unsupported PNG mode {mode!r} for a segmentation (expected RGB or greyscale)")


def encode_label_png(labels: np.ndarray) -> np.ndarray:
    """Encode non-negative int labels (< 65536) as H x W x 3 uint8 with R + 256 * G, B = 0."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"label values must lie in 0..65535, got {labels.min()}..{labels.max()}")
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    out[..., 0] = labels % 256
    out[..., 1] = labels // 256
    return out


def join_cell(items: Iterable[object]) -> str:
    """Join cell items with ';' (the format's separator)."""
    return ";".join(str(x) for x in items)


def split_cell(cell: str) -> list[str]:
    """Split a ';'-joined cell into its non-empty items."""
    return [x for x in (cell or "").split(";") if x.strip() != ""]


_CAT_ITEM = re.compile(r"^\s*([^()]+?)\s*\(\s*(\d+)\s*\)\s*$")


def parse_category_cell(cell: str) -> dict[str, int]:
    """Parse label.csv's category cell 'material(36);object(3)' into {'material': 36, 'object': 3}."""
    out: dict[str, int] = {}
    for item in split_cell(cell):
        m = _CAT_ITEM.match(item)
        if not m:
            raise ValueError(f"malformed category item {item!r} (expected 'name(count)')")
        out[m.group(1)] = int(m.group(2))
    return out


def format_category_cell(counts: dict[str, int]) -> str:
    """Format {'material': 36, 'object': 3} as 'material(36);object(3)', most images first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ";".join(f"{name}({count})" for name, count in items)


def format_coverage(value: float) -> str:
    """Coverage is printed with %f in the released files."""
    return "%f" % value


def layer_filename(basename: str, category: str, layer: int, n_layers: int) -> str:
    """Segmentation file name: '<base>_<cat>.png', or '<base>_<cat>_<k>.png' (k from 1) for several layers."""
    if n_layers <= 1:
        return f"{basename}_{category}.png"
    return f"{basename}_{category}_{layer + 1}.png"


def order_categories(first_numbers: dict[str, int], known: Sequence[str] = BRODEN_CATEGORIES) -> list[str]:
    """Order categories by their smallest global label number (ties and empty ones by the Broden order)."""
    rank = {c: i for i, c in enumerate(known)}
    big = 1 << 62
    return sorted(first_numbers, key=lambda c: (first_numbers[c] or big, rank.get(c, len(rank)), c))


# ----------------------------------------------------------------------------- whole images only
_TRUNCATION_SETTING = threading.Lock()


def load_whole(im) -> None:
    """``im.load()`` with a truncated file refused (OSError "image file is truncated") whatever
    Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` says: anything in the process (a
    library, a notebook) may set it, and a half-decoded image must never be stored or dissected
    (a damaged input is refused, never stored half-read). The setting is restored after, under a
    lock for this process's threads."""
    from PIL import ImageFile

    with _TRUNCATION_SETTING:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


@contextmanager
def open_image(path):
    """``PIL.Image.open(path)``, loaded whole (:func:`load_whole`): the one way images and label PNGs
    are opened. Raises what Image.open raises, and OSError for a truncated file."""
    from PIL import Image

    with Image.open(path) as im:
        load_whole(im)
        yield im
