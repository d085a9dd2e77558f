"""Report plots (matplotlib, the ``report`` extra): SVG and PNG written side by side, atomically.

- :func:`detector_bars`: detectors per concept, grouped by category (as in the paper's figures).
- :func:`layer_lines`: unique detectors per category, a group of bars per layer.
"""
from __future__ import annotations

import io
import logging
import zlib
from pathlib import Path
from typing import Mapping, Sequence

from broden_builder.store.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

#: Fixed category colours, so every plot and page agrees.
CATEGORY_COLORS = {
    "object": "#1f77b4", "part": "#ff7f0e", "material": "#2ca02c",
    "scene": "#d62728", "texture": "#9467bd", "color": "#8c564b",
}
_EXTRA = ["#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def category_color(category: str, order: Sequence[str] = ()) -> str:
    if category in CATEGORY_COLORS:
        return CATEGORY_COLORS[category]
    others = [c for c in order if c not in CATEGORY_COLORS]
    i = others.index(category) if category in others else zlib.crc32(category.encode())
    return _EXTRA[i % len(_EXTRA)]


def _pyplot():
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
    order; within one, concepts go from most to fewest detectors (then by name). Writes
    ``stem.svg`` and ``stem.png`` and returns their paths.
    """
    plt = _pyplot()
    bars = []  # (category, concept, n)
    for cat, per in counts.items():
        for name, n in sorted(per.items(), key=lambda kv: (-kv[1], kv[0])):
            if n > 0:
                bars.append((cat, name, int(n)))
    order = list(counts)
    width = min(60.0, max(4.0, 0.22 * len(bars) + 1.5))
    fig, ax = plt.subplots(figsize=(width, 3.6))
    if bars:
        xs = range(len(bars))
        ax.bar(xs, [b[2] for b in bars], color=[category_color(b[0], order) for b in bars], width=0.8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([b[1] for b in bars], rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(bars) - 0.4)
        start = 0
        for cat in order:
            n = sum(1 for b in bars if b[0] == cat)
            if n:
                ax.text(start + (n - 1) / 2, 1.0, f"{cat} ({n})", transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8, color=category_color(cat, order))
                if start:
                    ax.axvline(start - 0.5, color="#cccccc", linewidth=0.8)
                start += n
    else:
        ax.text(0.5, 0.5, "no detectors", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_ylabel("detectors")
    ax.yaxis.get_major_locator().set_params(integer=True)
    if title:
        ax.set_title(title, pad=18)
    return _save(fig, Path(stem))


def layer_lines(layers: Sequence[str], unique: Mapping[str, Sequence[int]], stem, title: str = "") -> list:
    """Grouped bars: unique detectors (distinct concepts among detector units) per category, per layer.

    ``unique[category][i]`` is the count for ``layers[i]``. Writes ``stem.svg``/``stem.png``.
    """
    plt = _pyplot()
    order = list(unique)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(layers) * max(1, len(order)) * 0.25 + 3.0), 3.4))
    xs = list(range(len(layers)))
    width = 0.8 / max(1, len(order))
    for j, cat in enumerate(order):
        pos = [x - 0.4 + width * (j + 0.5) for x in xs]
        ax.bar(pos, list(unique[cat]), width=width, label=cat, color=category_color(cat, order))
    ax.set_xticks(xs)
    ax.set_xticklabels(list(layers), rotation=30 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center")
    ax.set_ylabel("unique detectors")
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    if order:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        ax.set_title(title)
    return _save(fig, Path(stem))
