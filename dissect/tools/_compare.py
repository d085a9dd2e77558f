"""``dissect compare OUT1 OUT2 ...``: detectors and unique detectors per category for every layer
of every run, side by side (Bau et al., CVPR 2017, section 4: across layers, networks,
training checkpoints and the rotated-basis baseline of section 3.2).

Writes into ``--out`` only: ``compare.csv`` (one row per run, layer and category, plus an "all"
row per layer), ``compare.html`` (a table and the charts), and ``unique_detectors.svg/png``,
``detectors.svg/png``: stacked bars per layer of each run, coloured by category, as the
paper's figures. Run names come from each result.json (model, weights, basis, or the
activation file), made unique with the OUT folder name when two runs would share one.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from broden_builder.store.atomic import atomic_write_text

from ..errors import DissectError
from ..results import ResultsError, read_result_json, result_folders, results_lock

CSV_COLUMNS = ("run", "folder", "layer", "category", "units", "detectors", "unique_detectors", "iou_threshold")


class CompareInputError(DissectError):
    """A results folder that cannot be compared (the message names it)."""


@dataclass
class LayerSummary:
    run: str
    folder: str
    layer: str
    units: int
    iou_threshold: float
    per_category: dict  # category -> detectors
    unique: dict  # category -> unique detectors (distinct labels among the detectors)
    layer_dir: str = ""  # the layer's folder (for links)


def run_name(doc: dict) -> str:
    """A short name for the run that produced result.json ``doc``."""
    m = doc.get("model") or {}
    if m.get("kind") == "activations":
        base = Path(str(m.get("file") or "activations")).stem
    else:
        base = str(m.get("spec") or m.get("name") or m.get("class") or "model")
        w = m.get("weights")
        if isinstance(w, dict):
            base += f" ({Path(str(w.get('checkpoint', 'checkpoint'))).name})"
        elif isinstance(w, str) and w:
            base += " (random init)" if w.startswith("none") else f" ({w.split('.')[-1]})"
    basis = (doc.get("settings") or {}).get("basis")
    if isinstance(basis, dict):
        if basis.get("kind") == "rotate":
            base += f" rotated (seed {basis.get('seed')})"
        else:
            base += f" basis {Path(str(basis.get('file', 'file'))).stem}"
    return base


def _layer_dirs(out: Path) -> list:
    try:
        found = result_folders(out)
    except ResultsError as e:
        raise CompareInputError(str(e)) from None
    if not found:
        raise CompareInputError(f"{out}: no <layer>/result.json inside (not a dissect run/score output folder?)")
    return found


def _read(path: Path) -> dict:
    try:
        doc = read_result_json(path)
    except ResultsError as e:
        raise CompareInputError(str(e)) from None
    if not isinstance(doc, dict):
        raise CompareInputError(f"{path / 'result.json'}: must be a JSON object, got {type(doc).__name__}")
    for k in ("layer", "summary", "units"):
        if k not in doc:
            raise CompareInputError(f"{path / 'result.json'}: no {k!r} field")
    _check_types(doc, path)
    return doc


def _check_types(doc: dict, layer_dir: Path) -> None:
    """CompareInputError naming the field of result.json whose type is not the one compare reads (issue 25)."""
    def bad(field: str, want: str, got) -> CompareInputError:
        return CompareInputError(f"{layer_dir / 'result.json'}: field {field!r} must be {want}, got {type(got).__name__} {got!r:.60}")

    number = (int, float)
    if not isinstance(doc["layer"], str):
        raise bad("layer", "text", doc["layer"])
    for key, want in (("summary", dict), ("model", (dict, type(None))), ("settings", (dict, type(None)))):
        if not isinstance(doc.get(key), want):
            raise bad(key, "an object", doc.get(key))
    s = doc["summary"]
    if not isinstance(s.get("units", 0), int) or isinstance(s.get("units", 0), bool):
        raise bad("summary.units", "an integer", s.get("units"))
    for key in ("per_category", "unique_detectors"):
        counts = s.get(key, {})
        if not isinstance(counts, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                   for v in counts.values()):
            raise bad(f"summary.{key}", "an object of category -> integer", counts)
    thr = (doc.get("settings") or {}).get("iou_threshold", 0.04)
    if not isinstance(thr, number) or isinstance(thr, bool):
        raise bad("settings.iou_threshold", "a number", thr)


def collect(outs: Sequence[Union[str, Path]]) -> list:
    """LayerSummary for every layer of every results folder, runs in the given order."""
    runs = []
    for out in outs:
        out = Path(out)
        layers = []
        for d in _layer_dirs(out):
            doc = _read(d)
            s = doc["summary"]
            thr = float((doc.get("settings") or {}).get("iou_threshold", 0.04))
            layers.append(LayerSummary(run_name(doc), out.name or str(out), str(doc["layer"]), int(s.get("units", 0)),
                                       thr, dict(s.get("per_category", {})), dict(s.get("unique_detectors", {})),
                                       str(d)))
        runs.append(layers)
    names = [r[0].run for r in runs]
    for i, r in enumerate(runs):  # same name for two runs: add the folder name
        if names.count(names[i]) > 1:
            for ls in r:
                ls.run = f"{ls.run} [{ls.folder}]"
    names = [r[0].run for r in runs]
    for i, r in enumerate(runs):  # still the same (same folder name): number them
        if names.count(names[i]) > 1:
            for ls in r:
                ls.run = f"{ls.run} #{i + 1}"
    return [ls for r in runs for ls in r]


def categories_of(summaries: Sequence[LayerSummary]) -> list:
    cats: list = []
    for s in summaries:
        for c in list(s.per_category) + list(s.unique):
            if c not in cats:
                cats.append(c)
    return cats


def compare_csv_text(summaries: Sequence[LayerSummary]) -> str:
    cats = categories_of(summaries)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in summaries:
        for c in cats + ["all"]:
            det = sum(s.per_category.values()) if c == "all" else s.per_category.get(c, 0)
            uni = sum(s.unique.values()) if c == "all" else s.unique.get(c, 0)
            w.writerow([s.run, s.folder, s.layer, c, s.units, det, uni, repr(s.iou_threshold)])
    return buf.getvalue()


def stacked_bars(summaries: Sequence[LayerSummary], field: str, stem: Path, ylabel: str, title: str = "") -> list:
    """One bar per (run, layer), stacked by category; runs separated and labelled below."""
    from ..report.plots import _pyplot, _save, category_color

    plt = _pyplot()
    cats = categories_of(summaries)
    n = len(summaries)
    fig, ax = plt.subplots(figsize=(min(40.0, max(4.5, 0.45 * n + 3.0)), 3.8))
    xs = list(range(n))
    bottom = [0] * n
    for c in cats:
        vals = [int(getattr(s, field).get(c, 0)) for s in summaries]
        if any(vals):
            ax.bar(xs, vals, bottom=bottom, width=0.75, label=c, color=category_color(c, cats))
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(xs)
    ax.set_xticklabels([s.layer for s in summaries], rotation=90 if n > 6 else 0, fontsize=8)
    start = 0
    while start < n:  # label each run under its group of layers
        end = start
        while end + 1 < n and summaries[end + 1].run == summaries[start].run:
            end += 1
        ax.text((start + end) / 2, -0.18 if n <= 6 else -0.45, summaries[start].run, transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=8)
        if start:
            ax.axvline(start - 0.5, color="#bbbbbb", linewidth=0.8)
        start = end + 1
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    if cats:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        ax.set_title(title)
    return _save(fig, Path(stem))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:2px 8px;text-align:right}td.l,th.l{text-align:left}img{max-width:100%}.cat{color:#fff;padding:0 4px;border-radius:3px}</style>
</head><body>
<h1>{{ title }}</h1>
<p>Detectors (units whose best IoU reaches the IoU threshold) and unique detectors (distinct concepts among them)
per category, for every layer of every run (Bau et al., CVPR 2017, section 4). Data: <a href="compare.csv">compare.csv</a>.</p>
{% if charts %}<h2>Unique detectors</h2><img src="unique_detectors.svg" alt="unique detectors per category">
<h2>Detectors</h2><img src="detectors.svg" alt="detectors per category">{% endif %}
<h2>Table</h2>
<table><tr><th class="l">run</th><th class="l">layer</th><th>units</th>
{% for c in cats %}<th><span class="cat" style="background:{{ colors[c] }}">{{ c }}</span></th>{% endfor %}
<th>all</th></tr>
{% for s in rows %}<tr><td class="l">{{ s.run }}</td><td class="l">{% if s.href %}<a href="{{ s.href }}">{{ s.layer }}</a>{% else %}{{ s.layer }}{% endif %}</td><td>{{ s.units }}</td>
{% for c in cats %}<td>{{ s.unique.get(c, 0) }} / {{ s.per_category.get(c, 0) }}</td>{% endfor %}
<td>{{ s.unique.values()|sum }} / {{ s.per_category.values()|sum }}</td></tr>
{% endfor %}</table>
<p>Cells: unique detectors / detectors.</p>
</body></html>
"""


def write_compare(outs: Sequence[Union[str, Path]], dest: Union[str, Path], title: str = "Network Dissection: comparison",
                  charts: bool = True) -> Path:
    """Write compare.csv, compare.html and the charts into ``dest``; returns compare.html.
    Raises CompareInputError naming a folder that is not a dissection output, LockedError while
    another process writes into ``dest``."""
    if not outs:
        raise CompareInputError("give at least one results folder")
    summaries = collect(outs)
    dest = Path(dest)
    with results_lock(dest, "dissect compare"):  # one writer per folder; the page is written last (issue 25)
        return _write_page(summaries, dest, title, charts)


def _write_page(summaries, dest: Path, title: str, charts: bool) -> Path:
    """compare.csv, the charts, then compare.html (which links them) into ``dest``."""
    import os

    import jinja2

    from ..report.plots import category_color

    atomic_write_text(dest / "compare.csv", compare_csv_text(summaries))
    drawn = False
    if charts:
        try:
            stacked_bars(summaries, "unique", dest / "unique_detectors", "unique detectors")
            stacked_bars(summaries, "per_category", dest / "detectors", "detectors")
            drawn = True
        except ImportError:
            drawn = False
    cats = categories_of(summaries)
    rows = []
    for s in summaries:
        report = Path(s.layer_dir) / "report.html"
        href = os.path.relpath(report, dest) if report.is_file() else None
        rows.append(dict(vars(s), href=href))
    env = jinja2.Environment(autoescape=True)
    html = env.from_string(_PAGE).render(title=title, cats=cats, rows=[_Obj(r) for r in rows], charts=drawn,
                                         colors={c: category_color(c, cats) for c in cats})
    atomic_write_text(dest / "compare.html", html)
    return dest / "compare.html"


class _Obj(dict):
    __getattr__ = dict.__getitem__


__all__ = ["write_compare", "collect", "run_name", "compare_csv_text", "CompareInputError", "LayerSummary"]
