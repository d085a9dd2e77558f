"""Write the static report: ``O/<layer>/report.html`` per layer and ``O/index.html`` over all layers.

Images and plots go beside the pages (``O/<layer>/report_files/``, ``O/report_files/``); the
pages load nothing from the network.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from broden_builder.shared import progress
from broden_builder.shared import atomic_write_bytes, atomic_write_text
from broden_builder import StoreFormatError

from ..results import LayerResult, ResultsError, find_layer_folders, load_result, open_store, summarise
from . import html
from .masks import dim_table, draw_strip, unit_masks
from .plots import detector_bars, layer_lines
from .summary import summary_line

log = logging.getLogger(__name__)

PAGE = "report.html"
INDEX = "index.html"
FILES = "report_files"
STRIP_GAP = 2  # px of background between the images of a strip
#: How far the image outside a unit's mask is dimmed towards grey (masks.overlay).
DIM = 0.3


def _open_store(store, res: LayerResult):
    """The store for the images (dissect.results.open_store); None, with a warning, when the
    recorded one is gone or is not the one dissected (the report then shows no images). A store
    given explicitly that cannot be used raises ResultsError."""
    try:
        return open_store(res, store, base=res.path.parent if res.path is not None else None)
    except (ResultsError, StoreFormatError) as e:
        if store is not None:
            raise
        log.warning("the report shows no images: %s", e)
        return None


def _store_path(store, result: dict, out_dir: Path) -> Optional[Path]:
    """The store's folder (given, or recorded in result.json), None when unknown: for its build.json."""
    if store is not None:
        return Path(store) if isinstance(store, (str, Path)) else getattr(store, "root", None)
    recorded = (result.get("store") or {}).get("path")
    for c in [Path(recorded), out_dir / recorded] if recorded else []:
        if (c / "build.json").is_file():
            return c
    return None


def _thumbnail(st, row: int, thumb: int) -> tuple:
    """Row ``row``'s image ``thumb`` px high (aspect kept), RGBX uint8 [thumb, tw, 4], and the same
    dimmed (masks.dim_table). A JPEG is decoded at a reduced DCT scale when it is at least twice the
    thumbnail (PIL draft), which is most of the decoding time saved. RGBX (4-byte pixels, the same
    RGB values as an RGB conversion) lets the overlay select whole 32-bit pixels."""
    path = st.image_path(row)
    try:
        with st.open_member(st.rows[row].image, row) as f, Image.open(f) as im:
            w, h = im.size
            tw = max(1, round(w * thumb / h))
            im.draft("RGB", (tw, thumb))
            rgbx = np.asarray(im.convert("RGBX").resize((tw, thumb), Image.Resampling.BILINEAR))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise StoreFormatError(path, f"cannot read image of index.csv row {row + 1} ({e})") from None
    return rgbx, np.take(dim_table(DIM), rgbx)


def _jpeg(strip: np.ndarray) -> bytes:
    """An RGB or RGBX strip as JPEG bytes: quality 88 and no chroma subsampling, so thin outlines stay
    crisp (RGBX is encoded straight from its buffer: the same bytes as its RGB copy)."""
    h, w, c = strip.shape
    mode = "RGBX" if c == 4 else "RGB"
    buf = io.BytesIO()
    Image.frombuffer(mode, (w, h), np.ascontiguousarray(strip), "raw", mode, 0, 1).save(
        buf, format="JPEG", quality=88, subsampling=0
    )
    return buf.getvalue()


def _draw_unit(i: int, rows: np.ndarray, thumbs: dict, masks: dict, thumb: int, files: Path) -> tuple:
    """Write unit ``i``'s strip (its top images ``rows``, -1 = none, with its masks); (href, width,
    height, tiles): ``tiles`` "x:w,x:w,..." gives each image's left edge and width in the strip (px),
    for the lightbox that enlarges one image at a time."""
    shown = [(j, int(r)) for j, r in enumerate(rows) if r >= 0]
    tiles = [thumbs[r][0] for _, r in shown]
    strip = draw_strip(
        tiles,
        [thumbs[r][1] for _, r in shown],
        [masks[thumbs[r][0].shape[:2]][i, j] for j, r in shown],
        thumb,
        STRIP_GAP,
    )
    name = f"unit_{i + 1:04d}.jpg"
    atomic_write_bytes(files / name, _jpeg(strip))
    edges, x = [], 0
    for t in tiles:  # draw_strip's layout: side by side, GAP px apart
        edges.append(f"{x}:{t.shape[1]}")
        x += t.shape[1] + STRIP_GAP
    return html.href(FILES, name), strip.shape[1], strip.shape[0], ",".join(edges)


def _thumb_sizes(st, rows: Sequence[int], thumb: int) -> set:
    """The thumbnail sizes (thumb, tw) of these rows as index.csv gives the image sizes (none when the
    store has no row table); the decoded thumbnails have the final word."""
    table = getattr(st, "rows", None)
    if table is None:
        return set()
    return {(thumb, max(1, round(table[r].iw * thumb / table[r].ih))) for r in rows}


def report_threads() -> int:
    """Threads drawing the strips: the CPUs available (affinity and cgroup aware), at most 4. Image
    decoding, numpy's selects, JPEG encoding and file writes release the GIL."""
    from ..engine import available_cpus

    return max(1, min(4, available_cpus()))


def _strips(data: LayerResult, st, files: Path, thumb: int, images_per_unit: Optional[int], quiet: bool) -> dict:
    """Write one strip of top images per unit; {unit_index: (href, width, height)}. The masks are the
    tallied ones (the recorded upsampling mode at the recorded segmentation size), computed for all
    units in one batched step (masks.unit_masks) and drawn on thumbnails; each image is decoded and
    dimmed once. Decoding and drawing run on report_threads() threads."""
    maps = data.topk_maps
    k = maps.shape[1] if images_per_unit is None else min(images_per_unit, maps.shape[1])
    rows = np.asarray(data.topk_indices[:, :k], dtype=np.int64)
    if rows.size and rows.max() >= len(st):
        u = int(np.argwhere(rows >= len(st))[0, 0])
        raise ResultsError(
            f"{data.path / 'topk.npz'}: unit {u + 1} names image row {int(rows[u].max())} "
            f"but the store has {len(st)} rows"
        )
    wanted = sorted({int(r) for r in rows.ravel() if r >= 0})
    seg = (data.store or {}).get("segmentation_size")
    mode = (data.settings or {}).get("upsample") or "bilinear"
    units = [int(u["unit_index"]) for u in data.units]
    masks: dict = {}  # thumbnail size -> bool [U, k, th, tw]

    def masks_at(sizes):
        for s in sorted(set(sizes) - set(masks)):
            masks[s] = unit_masks(maps[:, :k], data.thresholds, tuple(seg) if seg else s, s, mode)

    with ThreadPoolExecutor(report_threads()) as pool:
        decoding = pool.map(lambda r: _thumbnail(st, r, thumb), wanted)
        masks_at(_thumb_sizes(st, wanted, thumb))  # while the images decode: sizes from index.csv
        thumbs = dict(zip(wanted, decoding))
        masks_at(t.shape[:2] for t, _ in thumbs.values())  # any the index did not predict
        drawn = pool.map(lambda i: _draw_unit(i, rows[i], thumbs, masks, thumb, files), units)
        what = "feature" if (data.settings or {}).get("dissected") == "feature" else "unit"
        strips = list(
            progress(drawn, quiet, total=len(units), desc=f"report {data.layer}", unit=what)
        )  # to its end line
        return dict(zip(units, strips))


def _layer_strips(
    data: LayerResult,
    store,
    files: Path,
    thumb: int,
    images_per_unit: Optional[int],
    quiet: bool,
    store_cache: Optional[dict],
) -> dict:
    """The layer's image strips (none without stored top-k maps or a readable store); the store is
    opened once per (recorded path or given store) in ``store_cache``."""
    if data.topk_maps is None:
        return {}
    key: tuple
    if store is None:  # each result names its own store
        key = ("recorded", str((data.store or {}).get("path")))
    else:
        key = ("given", str(store) if isinstance(store, (str, Path)) else id(store))
    cache = store_cache if store_cache is not None else {}
    if key not in cache:
        cache[key] = _open_store(store, data)
    if cache[key] is None:
        return {}
    return _strips(data, cache[key], files, thumb, images_per_unit, quiet)


def write_layer_report(
    layer: Union[LayerResult, str, Path],
    store=None,
    thumb: int = 112,
    images_per_unit: Optional[int] = None,
    quiet: bool = True,
    index_href: Optional[str] = "../" + INDEX,
    _store_cache: Optional[dict] = None,
) -> Path:
    """Write ``<layer folder>/report.html`` (+ ``report_files/``); return the page's path.

    ``layer``: a LayerResult (as returned by a dissection, or loaded) or its folder.
    ``store``: a BrodenStore or its path; by default the path recorded in result.json.
    ``images_per_unit``: show at most this many of the stored top-k images (default: all).
    """
    data = layer if isinstance(layer, LayerResult) else load_result(layer)
    folder = data.path
    files = folder / FILES
    files.mkdir(parents=True, exist_ok=True)
    categories = data.categories
    summ = summarise(data.units, categories, data.iou_threshold)
    strips = _layer_strips(data, store, files, thumb, images_per_unit, quiet, _store_cache)
    detector_bars(
        {c: summ["concepts"].get(c, {}) for c in categories},
        files / "detectors",
        title=f"{data.layer}: detectors per concept",
    )
    plot = html.href(FILES, "detectors.svg")
    page = folder / PAGE
    from .analyses import layer_notes, predicted_lines, store_predicted_labels, unit_extras

    links = [(n, n) for n in ("explanations.csv", "ablations.json", "descriptions.csv") if (folder / n).is_file()]
    predicted = store_predicted_labels(_store_path(store, data.to_json(), folder.parent))
    extras = unit_extras(folder)
    for u, line in predicted_lines(data.units, predicted).items():
        extras[u] = line + extras.get(u, "")
    atomic_write_text(
        page,
        html.layer_page(
            data.layer,
            data.to_json(),
            data.sorted_units(),
            categories,
            summ,
            strips,
            plot,
            index_href,
            extras=extras,
            extra_links=links,
            notes_extra=layer_notes(folder, data.units, predicted),
        ),
    )
    return page


def write_index(out_dir, layers: Sequence[LayerResult], title: str = "Network Dissection") -> Path:
    """Write ``out_dir/index.html`` linking every layer page, with the cross-layer plot."""
    out_dir = Path(out_dir)
    categories: list = []
    for d in layers:
        categories += [c for c in d.categories if c not in categories]
    rows = []
    for d in layers:
        summ = summarise(d.units, categories, d.iou_threshold)
        rows.append((d.layer, html.href(d.path.name, PAGE), summ, d.to_json()))
    plot = None
    if layers:
        unique = {c: [r[2]["unique_detectors"].get(c, 0) for r in rows] for c in categories}
        layer_lines(
            [r[0] for r in rows], unique, out_dir / FILES / "unique_detectors", title="unique detectors per layer"
        )
        plot = html.href(FILES, "unique_detectors.svg")
    page = out_dir / INDEX
    atomic_write_text(page, html.index_page(rows, categories, plot, title))
    return page


def write_reports(
    out_dir,
    store=None,
    thumb: int = 112,
    images_per_unit: Optional[int] = None,
    quiet: bool = True,
    layers: Optional[Sequence[str]] = None,
    results: Sequence[LayerResult] = (),
) -> Path:
    """Write every layer's page and the index for a results folder; return the index page's path.

    ``out_dir``: the ``--out`` folder of ``dissect run``/``score`` (one subfolder per layer).
    ``store``: a BrodenStore or its path for the images; by default each result's recorded path.
    ``layers``: only these layer subfolders' pages are (re)written; the index covers all of them.
    ``results``: LayerResults already in memory (written under ``out_dir``): rendered as they are,
    not read back; the other layers' folders are loaded.

    Example::

        from dissect.report import write_reports
        page = write_reports("out")            # out/index.html, out/<layer>/report.html
    """
    out_dir = Path(out_dir)
    folders = find_layer_folders(out_dir)
    if not folders:
        raise ResultsError(f"{out_dir}: no layer results found (no <layer>/result.json)")
    known = {Path(r.path).resolve(): r for r in results if r.path is not None}
    datas = [known.get(f.resolve()) or load_result(f) for f in folders]
    cache: dict = {}
    for d in datas:
        if layers is None or d.path.name in layers or d.layer in layers:
            write_layer_report(d, store, thumb, images_per_unit, quiet, _store_cache=cache)
            what = "feature" if (d.settings or {}).get("dissected") == "feature" else "unit"
            log.info(summary_line(d.layer, summarise(d.units, d.categories), what))
    return write_index(out_dir, datas)
