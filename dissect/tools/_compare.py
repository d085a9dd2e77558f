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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from broden_builder.shared import atomic_write_text

from ..errors import DissectError
from ..results import ResultsError, predicted_detectors, read_result_json, result_folders, results_lock

CSV_COLUMNS = (
    "run",
    "folder",
    "layer",
    "category",
    "units",
    "detectors",
    "unique_detectors",
    "iou_threshold",
    "significant_detectors",
    "mean_iou",
    "constant_units",
)


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
    significant: Optional[dict] = None  # category -> significant detectors; None: run without the permutation null
    mean_iou: dict = field(default_factory=dict)  # category -> mean best IoU of the units whose best label is in it
    all_mean_iou: float = 0.0  # mean best IoU of all units
    constant: int = 0  # units with one value over the probe set
    what: str = "unit"  # "feature" for an SAE's features (settings["dissected"]), "basis" for a rotation
    concepts: list = field(default_factory=list)  # (category, label) of the detectors, sorted
    random: bool = False  # the model had random weights (--weights none): marked in the table and the charts
    predicted: dict = field(default_factory=dict)  # MODEL -> detectors whose label a segmentation model predicted

    @property
    def detectors(self) -> int:
        return sum(self.per_category.values())

    @property
    def unique_concepts(self) -> int:
        return sum(self.unique.values())

    @property
    def significant_total(self) -> Optional[int]:
        return None if self.significant is None else sum(self.significant.values())


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
        if m.get("random_weights") and "(random init)" not in base:
            base += " (random init)"
    if (doc.get("settings") or {}).get("dissected") == "feature":
        base += " SAE features"
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
    """CompareInputError naming the field of result.json whose type is not the one compare reads."""

    def bad(field: str, want: str, got) -> CompareInputError:
        return CompareInputError(
            f"{layer_dir / 'result.json'}: field {field!r} must be {want}, got {type(got).__name__} {got!r:.60}"
        )

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
        if not isinstance(counts, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in counts.values()
        ):
            raise bad(f"summary.{key}", "an object of category -> integer", counts)
    thr = (doc.get("settings") or {}).get("iou_threshold", 0.04)
    if not isinstance(thr, number) or isinstance(thr, bool):
        raise bad("settings.iou_threshold", "a number", thr)


def is_random(doc: dict) -> bool:
    """True when result.json ``doc`` comes from a model with random weights (``--weights none``)."""
    m = doc.get("model") or {}
    w = m.get("weights")
    return bool(m.get("random_weights")) or (isinstance(w, str) and w.startswith("none"))


def _unit_stats(units: Sequence[dict]) -> tuple:
    """(significant {category: n} or None, mean best IoU {category: x}, mean best IoU of all, constant units).

    Significant detectors exist only where the units carry the permutation null's ``significant``
    (result.json of ``--null N``); a constant unit is never one."""
    sig: Optional[dict] = None
    if units and all("significant" in u for u in units):
        sig = {}
        for u in units:
            if u["significant"] and not u.get("constant"):
                sig[u["category"]] = sig.get(u["category"], 0) + 1
    by_cat: dict = {}
    for u in units:
        by_cat.setdefault(u.get("category"), []).append(float(u.get("iou", 0.0)))
    means = {c: sum(v) / len(v) for c, v in by_cat.items() if c}
    all_mean = sum(float(u.get("iou", 0.0)) for u in units) / len(units) if units else 0.0
    return sig, means, all_mean, sum(1 for u in units if u.get("constant"))


def _summarise_layer(doc: dict, out: Path, d: Path, name: Optional[str]) -> LayerSummary:
    s = doc["summary"]
    thr = float((doc.get("settings") or {}).get("iou_threshold", 0.04))
    sig, means, all_mean, constant = _unit_stats(doc["units"])
    return LayerSummary(
        name or run_name(doc),
        out.name or str(out),
        str(doc["layer"]),
        int(s.get("units", 0)),
        thr,
        dict(s.get("per_category", {})),
        dict(s.get("unique_detectors", {})),
        str(d),
        sig,
        means,
        all_mean,
        constant,
        *_kind_and_concepts(doc, thr),
        random=is_random(doc),
        predicted=predicted_detectors(doc, thr),
    )


def run_names(outs: Sequence[Union[str, Path]], names: Union[None, dict, Sequence[Optional[str]]]) -> list:
    """A run name per folder (None: from its result.json). ``names`` is a list of those, or
    {OUT as given (or its folder name): label} (``dissect compare --name OUT=LABEL``); a key that is
    no OUT raises CompareInputError."""
    if not isinstance(names, dict):
        return list(names) if names is not None else [None] * len(outs)
    unknown = [k for k in names if not any(k in (str(o), Path(o).name) for o in outs)]
    if unknown:
        raise CompareInputError(
            f"--name {unknown[0]}=...: {unknown[0]!r} is none of the compared folders "
            f"({', '.join(str(o) for o in outs)})"
        )
    return [names.get(str(o), names.get(Path(o).name)) for o in outs]


def collect(outs: Sequence[Union[str, Path]], names: Union[None, dict, Sequence[Optional[str]]] = None) -> list:
    """LayerSummary for every layer of every results folder, runs in the given order.

    ``names``: see :func:`run_names` (None: names from each result.json, see :func:`run_name`)."""
    names = run_names(outs, names)
    if len(names) != len(outs):
        raise CompareInputError(f"{len(names)} run names for {len(outs)} results folders")
    runs = []
    for out, name in zip(outs, names):
        out = Path(out)
        runs.append([_summarise_layer(_read(d), out, d, name) for d in _layer_dirs(out)])
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


def _kind_and_concepts(doc: dict, thr: float) -> tuple[str, list]:
    """(what: unit / feature / basis, sorted (category, label) of the detectors) of result.json ``doc``."""
    units = doc.get("units") or []
    settings = doc.get("settings") or {}
    what = "feature" if settings.get("dissected") == "feature" else "basis" if settings.get("basis") else "unit"
    det = sorted(
        {
            (str(u.get("category")), str(u.get("label")))
            for u in units
            if float(u.get("iou", 0.0)) >= thr and u.get("label")
        }
    )
    return what, det


def features_only(summaries: Sequence[LayerSummary]) -> list:
    """[(feature LayerSummary, [(category, label), ...])]: per SAE-feature result, the concepts its
    detectors cover that no unit detector of a layer of the same name covers (in the compared runs;
    rotated bases are not units)."""
    out = []
    for f in summaries:
        if f.what != "feature":
            continue
        seen = {c for s in summaries if s.what == "unit" and s.layer == f.layer for c in s.concepts}
        out.append((f, [c for c in f.concepts if c not in seen]))
    return out


def features_only_csv_text(summaries: Sequence[LayerSummary]) -> str:
    """features_only.csv: run, layer, category, label of each concept found only by SAE features."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("run", "layer", "category", "label"))
    for f, concepts in features_only(summaries):
        for cat, label in concepts:
            w.writerow((f.run, f.layer, cat, label))
    return buf.getvalue()


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
    predicted = any(s.predicted for s in summaries)  # a store with predicted labels: which detectors carry them
    w.writerow(list(CSV_COLUMNS) + (["predicted_detectors"] if predicted else []))
    for s in summaries:
        for c in cats + ["all"]:
            det = sum(s.per_category.values()) if c == "all" else s.per_category.get(c, 0)
            uni = sum(s.unique.values()) if c == "all" else s.unique.get(c, 0)
            sig = "" if s.significant is None else (s.significant_total if c == "all" else s.significant.get(c, 0))
            mean = s.all_mean_iou if c == "all" else s.mean_iou.get(c)
            w.writerow(
                [
                    s.run,
                    s.folder,
                    s.layer,
                    c,
                    s.units,
                    det,
                    uni,
                    repr(s.iou_threshold),
                    sig,
                    "" if mean is None else f"{mean:.6f}",
                    s.constant if c == "all" else "",
                ]
                + ([_predicted_cell(s) if c == "all" else ""] if predicted else [])
            )
    return buf.getvalue()


def _predicted_cell(s: LayerSummary) -> str:
    """compare.csv's ``predicted_detectors``: "MODEL: n; ..." (detectors whose label a segmentation model predicted)."""
    return "; ".join(f"{m}: {n}" for m, n in sorted(s.predicted.items()))


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
    for patch_index, patch in enumerate(p for c in ax.containers for p in c):  # random runs: hatched bars
        if summaries[patch_index % n].random:
            patch.set_hatch("///")
            patch.set_edgecolor("#333333")
    ax.set_xticks(xs)
    ax.set_xticklabels([s.layer for s in summaries], rotation=90 if n > 6 else 0, fontsize=8)
    _label_runs(fig, ax, summaries)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    if any(any(int(getattr(s, field).get(c, 0)) for s in summaries) for c in cats):  # a bar with a label
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        ax.set_title(title)
    return _save(fig, Path(stem))


def _run_groups(summaries: Sequence[LayerSummary]) -> list:
    """(first, last) bar index of each run's group of layers."""
    groups, start = [], 0
    while start < len(summaries):
        end = start
        while end + 1 < len(summaries) and summaries[end + 1].run == summaries[start].run:
            end += 1
        groups.append((start, end))
        start = end + 1
    return groups


def _label_runs(fig, ax, summaries: Sequence[LayerSummary]) -> list:
    """Each run's name under its group of bars, wrapped to the group's width; where two names
    would still overlap (measured by the renderer), the font shrinks and then the names turn
    vertical. Random-weight runs are marked "[RANDOM]". Returns the Text objects."""
    import textwrap

    n = len(summaries)
    groups = _run_groups(summaries)
    for k, (start, _end) in enumerate(groups):
        if k:
            ax.axvline(start - 0.5, color="#bbbbbb", linewidth=0.8)
    bar_pt = fig.get_size_inches()[0] * 72 * 0.8 / max(n, 1)  # the axes span ~80% of the figure
    for size, rotation in ((8, 0), (7, 0), (6, 0), (7, 90)):
        texts = []
        for start, end in groups:
            s = summaries[start]
            name = s.run + (" [RANDOM]" if s.random and "random" not in s.run.lower() else "")
            width = max(6, int((end - start + 1) * bar_pt / (0.6 * size)))
            label = name if rotation else "\n".join(textwrap.wrap(name, width) or [name])
            texts.append(
                ax.text(
                    (start + end) / 2,
                    -0.18 if n <= 6 else -0.45,
                    label,
                    ha="center",
                    va="top",
                    transform=ax.get_xaxis_transform(),
                    fontsize=size,
                    rotation=rotation,
                )
            )
        if not _overlapping(fig, texts):
            return texts
        for t in texts:
            t.remove()
    return texts


def _overlapping(fig, texts) -> bool:
    """True when two of the texts' drawn boxes intersect."""
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:2px 8px;text-align:right}td.l,th.l{text-align:left}img{max-width:100%}\
.cat{color:#fff;padding:0 4px;border-radius:3px}
.rnd{background:#fde2e1;color:#8a1c14;padding:0 4px;border-radius:3px;font-size:85%}</style>
</head><body>
<h1>{{ title }}</h1>
<p>Detectors (units whose best IoU reaches the IoU threshold) and unique detectors (distinct concepts among them)
per category, for every layer of every run (Bau et al., CVPR 2017, section 4). \
Data: <a href="compare.csv">compare.csv</a>.</p>
{% if charts %}<h2>Unique detectors</h2><img src="unique_detectors.svg" alt="unique detectors per category">
<h2>Detectors</h2><img src="detectors.svg" alt="detectors per category">{% endif %}
<h2>Table</h2>
<table><tr><th class="l">run</th><th class="l">layer</th><th>units</th><th>mean best IoU</th>
{% for c in cats %}<th><span class="cat" style="background:{{ colors[c] }}">{{ c }}</span></th>{% endfor %}
<th>all</th><th>significant</th><th>mean best IoU</th><th>constant</th></tr>
{% for s in rows %}<tr><td class="l">{{ s.run }}\
{% if s.random %} <span class="rnd">RANDOM weights</span>{% endif %}</td>\
<td class="l">{% if s.href %}<a href="{{ s.href }}">{{ s.layer }}</a>{% else %}{{ s.layer }}{% endif %}</td>\
<td>{{ s.units }}{% if s.what == "feature" %} features{% endif %}</td>
{% for c in cats %}<td>{{ s.unique.get(c, 0) }} / {{ s.per_category.get(c, 0) }}</td>{% endfor %}
<td>{{ s.unique.values()|sum }} / {{ s.per_category.values()|sum }}</td>
<td>{{ "-" if s.significant is none else s.significant.values()|sum }}</td>\
<td>{{ "%.3f"|format(s.all_mean_iou) }}</td><td>{{ s.constant }}</td></tr>
{% endfor %}</table>
{% for line in predicted %}<p class="predicted">{{ line }}</p>{% endfor %}
<p>Cells: unique detectors / detectors. Significant: detectors whose q-value against the permutation null is at
most alpha ("-": the run had no <code>--null</code>). Mean best IoU: over all units. Constant: units with one value over
the probe set (never detectors).</p>
<p>Runs of randomly initialised models (--weights none) are marked RANDOM, and their bars are hatched.</p>
{% for f, concepts in only %}<h2>Concepts only in features: {{ f.run }}, {{ f.layer }}</h2>
<p>{{ concepts|length }} concept{{ "" if concepts|length == 1 else "s" }} covered by a detector among the SAE's features
and by no unit detector of layer {{ f.layer }} in the runs compared{% if concepts %}:{% else %}.{% endif %}
{% for cat, label in concepts %}{{ label }} ({{ cat }}){{ ", " if not loop.last }}{% endfor %}</p>
{% endfor %}{% if only %}<p>Data: <a href="features_only.csv">features_only.csv</a>.</p>{% endif %}
</body></html>
"""


TEXT_COLUMNS = ("run", "layer", "units", "detectors", "unique concepts", "significant", "mean best IoU", "constant")


def side_by_side(summaries: Sequence[LayerSummary]) -> str:
    """The runs' layers as aligned text, one row each: detectors, unique concepts (distinct labels
    among them), significant detectors ("-" without the permutation null), mean best IoU over all
    units, constant units."""
    rows = [TEXT_COLUMNS]
    for s in summaries:
        sig = s.significant_total
        rows.append(
            (
                s.run,
                s.layer,
                str(s.units),
                str(s.detectors),
                str(s.unique_concepts),
                "-" if sig is None else str(sig),
                f"{s.all_mean_iou:.3f}",
                str(s.constant),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(TEXT_COLUMNS))]
    return "\n".join(
        ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows] + predicted_notes(summaries)
    )


def predicted_notes(summaries: Sequence[LayerSummary]) -> list:
    """One line per layer whose detectors carry labels a segmentation model predicted (none for annotated stores)."""
    return [
        f"{s.run} {s.layer}: {n} of {s.detectors} detectors carry labels predicted by {model} "
        f"(segmentation model), not annotated"
        for s in summaries
        for model, n in sorted(s.predicted.items())
    ]


def write_compare(
    outs: Sequence[Union[str, Path]],
    dest: Union[str, Path],
    title: str = "Network Dissection: comparison",
    charts: bool = True,
    names: Union[None, dict, Sequence[Optional[str]]] = None,
) -> Path:
    """Write compare.csv, compare.html and the charts into ``dest``; returns compare.html.
    ``names``: see :func:`run_names`. Raises CompareInputError naming a folder that is not a dissection
    output, LockedError while another process writes into ``dest``."""
    if not outs:
        raise CompareInputError("give at least one results folder")
    summaries = collect(outs, names)
    dest = Path(dest)
    with results_lock(dest, "dissect compare"):  # one writer per folder; the page is written last
        return _write_page(summaries, dest, title, charts)


def _write_page(summaries, dest: Path, title: str, charts: bool) -> Path:
    """compare.csv, the charts, then compare.html (which links them) into ``dest``."""
    import os

    import jinja2

    from ..report.plots import category_color

    atomic_write_text(dest / "compare.csv", compare_csv_text(summaries))
    only = features_only(summaries)
    if only:
        atomic_write_text(dest / "features_only.csv", features_only_csv_text(summaries))
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
    html = env.from_string(_PAGE).render(
        title=title,
        cats=cats,
        rows=[_Obj(r) for r in rows],
        charts=drawn,
        only=only,
        predicted=predicted_notes(summaries),
        colors={c: category_color(c, cats) for c in cats},
    )
    atomic_write_text(dest / "compare.html", html)
    return dest / "compare.html"


class _Obj(dict):
    __getattr__ = dict.__getitem__


__all__ = [
    "write_compare",
    "side_by_side",
    "collect",
    "run_name",
    "compare_csv_text",
    "CompareInputError",
    "LayerSummary",
    "features_only",
]
