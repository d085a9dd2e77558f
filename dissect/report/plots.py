"""Report plots, drawn as SVG by a Jinja2 template (``templates/bars.svg``), written atomically.

- :func:`detector_bars`: detectors per concept, grouped by category (as in the paper's figures).
- :func:`layer_lines`: unique detectors per category, a group of bars per layer.

The charts are plain bars with integer axes, so they are laid out here in pixels and rendered by
the template: no plotting library is imported on the report's path (matplotlib's import and
savefig cost about a second per report). Every bar carries its count and concept in
``data-*`` attributes. ``dissect compare`` still draws with matplotlib (:func:`_pyplot`, :func:`_save`).
"""

from __future__ import annotations

import io
import logging
import math
import re
import zlib
from pathlib import Path
from typing import Mapping, Sequence

from broden_builder.shared import atomic_write_bytes, atomic_write_text

from .render import render

log = logging.getLogger(__name__)

#: Fixed category colours, so every plot and page agrees.
CATEGORY_COLORS = {
    "object": "#1f77b4",
    "part": "#ff7f0e",
    "material": "#2ca02c",
    "scene": "#d62728",
    "texture": "#9467bd",
    "color": "#8c564b",
}
_EXTRA = ["#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
#: Chart geometry in SVG pixels: plot area height, left margin (y axis), bar slot per concept.
PLOT_HEIGHT, LEFT, SLOT = 180, 46, 14


def category_color(category: str, order: Sequence[str] = ()) -> str:
    """The colour of a category: fixed for Broden's six, else one of a few by position in ``order``."""
    if category in CATEGORY_COLORS:
        return CATEGORY_COLORS[category]
    others = [c for c in order if c not in CATEGORY_COLORS]
    i = others.index(category) if category in others else zlib.crc32(category.encode())
    return _EXTRA[i % len(_EXTRA)]


def y_ticks(vmax: int) -> list:
    """Integer ticks 0..top covering ``vmax`` with at most 6 ticks, steps 1, 2, 5, 10, 20, 50, ..."""
    vmax = max(1, int(vmax))
    step = 1
    while vmax / step > 5:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1, 2, 5, 10, 20, 50, ...
    return list(range(0, -(-vmax // step) * step + 1, step))


def _frame(vmax: int, top: float, width_plot: float, ylabel: str, title: str) -> dict:
    """The chart dict shared by both plots: plot area, y ticks (value, y) and the scale."""
    ticks = y_ticks(vmax)
    y1, y0 = top, top + PLOT_HEIGHT
    scale = PLOT_HEIGHT / ticks[-1]
    return {
        "title": title,
        "ylabel": ylabel,
        "x0": LEFT,
        "x1": LEFT + width_plot,
        "y0": y0,
        "y1": y1,
        "scale": scale,
        "ticks": [(v, round(y0 - v * scale, 2)) for v in ticks],
        "bars": [],
        "xlabels": [],
        "headers": [],
        "seps": [],
        "legend": [],
        "note": "",
        "shift": 0,
    }


#: characters XML 1.0 forbids even when escaped (sec. 2.2: C0 controls other than tab, LF, CR;
#: U+FFFE, U+FFFF; lone surrogates): one in a label name made the whole SVG unreadable to browsers
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _write_svg(chart: dict, stem) -> list:
    """Render ``chart`` to ``stem.svg`` (atomically), characters XML forbids replaced by U+FFFD."""
    path = Path(stem).with_suffix(".svg")
    atomic_write_text(path, _NOT_XML.sub("\ufffd", render("bars.svg", c=chart)))
    return [path]


def _pyplot():
    """matplotlib.pyplot on the Agg backend (``dissect compare``'s charts; the ``report`` extra)."""
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'broden-dissect[report]'") from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, stem: Path) -> list:
    """Write stem.svg and stem.png (deterministic: no dates, fixed SVG ids)."""
    import matplotlib

    plt = _pyplot()
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "broden-dissect", "svg.fonttype": "none"}):
        for ext, meta in (("svg", {"Date": None}), ("png", {"Software": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, metadata=meta, dpi=100, bbox_inches="tight")
            path = stem.with_suffix("." + ext)
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
    plt.close(fig)
    return paths


def detector_bars(counts: Mapping[str, Mapping[str, int]], stem, title: str = "") -> list:
    """Bar chart of detector counts per concept, grouped by category.

    ``counts[category][concept] = number of detector units``. Categories keep the mapping's
    order; within one, concepts go from most to fewest detectors (then by name); each category's
    header says how many concepts it has. Writes ``stem.svg`` and returns ``[its path]``.
    """
    order = list(counts)
    bars = [
        (cat, name, int(n))
        for cat, per in counts.items()
        for name, n in sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))
        if n > 0
    ]
    c = _frame(max((b[2] for b in bars), default=1), 40 if title else 24, SLOT * max(len(bars), 12), "detectors", title)
    for i, (cat, name, n) in enumerate(bars):
        x = LEFT + SLOT * i
        c["bars"].append(
            {
                "x": x + 0.1 * SLOT,
                "y": c["y0"] - n * c["scale"],
                "w": 0.8 * SLOT,
                "h": n * c["scale"],
                "fill": category_color(cat, order),
                "category": cat,
                "name": name,
                "n": n,
            }
        )
        c["xlabels"].append(
            {"x": x + SLOT / 2, "y": c["y0"] + 4, "text": name, "rotate": -90, "anchor": "end", "size": 8}
        )
    rows = _category_headers(c, bars, order)
    if not bars:
        c["note"] = "no detectors"
    longest = max((len(b[1]) for b in bars), default=0)
    c["width"], c["height"] = c["x1"] + 12, math.ceil(c["y0"] + 10 + 5 * longest)
    if rows > 1:  # headers stacked in rows above the plot: move everything down by the extra rows
        c["shift"] = (rows - 1) * HEADER_ROW
        c["height"] += c["shift"]
    return _write_svg(c, stem)


#: Header text: 9 px DejaVu Sans; a width bound per character (wide letters, capitals, the rest) in
#: em, above the font's advance widths, so that two headers judged apart never touch.
HEADER_SIZE, HEADER_ROW = 9, 12


def text_width(text: str, size: float = HEADER_SIZE) -> float:
    """An upper bound of ``text``'s width in px at font size ``size`` (DejaVu Sans)."""
    return size * sum(0.95 if ch in "MWmw@%" else 0.78 if ch.isupper() else 0.62 for ch in text)


def _category_headers(c: dict, bars: list, order: list) -> int:
    """Each category's header ("object (12)") centred over its bars, on the first row (counted up
    from the plot) where it does not overlap a header already placed; a bracket spans its bars.
    Returns the number of rows used."""
    rows: list = []  # per row, the right edge of its last header
    start = 0
    for cat in order:
        n = sum(1 for b in bars if b[0] == cat)
        if not n:
            continue
        text = f"{cat} ({n})"
        x, half = LEFT + SLOT * (start + n / 2), text_width(text) / 2 + 3
        x = max(x, half)  # not past the left edge
        row = next((r for r, right in enumerate(rows) if x - half >= right), len(rows))
        if row == len(rows):
            rows.append(0.0)
        rows[row] = x + half
        c["headers"].append(
            {
                "x": x,
                "row": row,
                "text": text,
                "fill": category_color(cat, order),
                "x0": LEFT + SLOT * start + 1,
                "x1": LEFT + SLOT * (start + n) - 1,
            }
        )
        if start:
            c["seps"].append(LEFT + SLOT * start)
        start += n
    return max(1, len(rows))


def layer_lines(layers: Sequence[str], unique: Mapping[str, Sequence[int]], stem, title: str = "") -> list:
    """Grouped bars: unique detectors (distinct concepts among detector units) per category, per layer.

    ``unique[category][i]`` is the count for ``layers[i]``; a legend names the categories.
    Writes ``stem.svg`` and returns ``[its path]``.
    """
    order = list(unique)
    slot = max(48.0, 10.0 * len(order) + 16)
    vmax = max((int(v) for vals in unique.values() for v in vals), default=1)
    c = _frame(vmax, 32 if title else 12, slot * max(1, len(layers)), "unique detectors", title)
    width = 0.8 * slot / max(1, len(order))
    tilt = len(layers) > 4
    for i, layer in enumerate(layers):
        x = LEFT + slot * i
        for j, cat in enumerate(order):
            n = int(unique[cat][i])
            c["bars"].append(
                {
                    "x": x + 0.1 * slot + width * j,
                    "y": c["y0"] - n * c["scale"],
                    "w": width,
                    "h": n * c["scale"],
                    "fill": category_color(cat, order),
                    "category": cat,
                    "name": str(layer),
                    "n": n,
                }
            )
        c["xlabels"].append(
            {
                "x": x + slot / 2,
                "y": c["y0"] + 14,
                "text": str(layer),
                "rotate": -30 if tilt else 0,
                "anchor": "end" if tilt else "middle",
                "size": 10,
            }
        )
    for j, cat in enumerate(order):
        c["legend"].append(
            {"x": c["x1"] + 10, "y": c["y1"] + 14 * j + 8, "fill": category_color(cat, order), "text": cat}
        )
    longest = max((len(str(l)) for l in layers), default=0)
    legend_w = 24 + 6 * max((len(cat) for cat in order), default=0)
    c["width"] = math.ceil(c["x1"] + legend_w + 10)
    c["height"] = math.ceil(max(c["y0"] + 24 + (3 * longest if tilt else 0), c["y1"] + 14 * len(order) + 10))
    return _write_svg(c, stem)
