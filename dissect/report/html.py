"""HTML of the report pages, rendered from the Jinja2 templates in ``dissect/report/templates``.

The pages are static and self-contained (inline CSS and JS, no CDN): nothing comes from the
network. The layer page lists the units (sortable by IoU, unit, label and category; filterable
by category, concept and detector flag; a click enlarges a unit's top images), shows labels
without Broden's ``-c``/``-s`` suffixes (the raw label in a tooltip), says how many concepts
the detectors cover, links the layer's ``tally.csv`` and ``result.json``, and keeps the settings
and provenance in a collapsed block at the end.

Every page carries a small check script: after the ``load`` event it sets, on ``<html>``,
``data-ready="ok"`` (or ``"broken"``), ``data-images`` (count) and ``data-broken-images``
(their ``src``), and it records uncaught script errors in ``data-js-errors``. The browser
test reads these; a reader sees a warning line when an image failed to load.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence
from urllib.parse import quote

from broden_builder.shared import count

from .plots import category_color
from .render import environment
from ..results import constant_text, is_detector, predicted_detectors
from .summary import display_name


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _base(path) -> str:
    return str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _weights_text(w) -> str:
    """Weights in a few words: the weight name, the checkpoint's file name, "random init"."""
    if isinstance(w, dict):
        return _base(w.get("checkpoint") or w.get("hf") or w.get("file") or "") or "checkpoint"
    w = str(w or "")
    if w.startswith("none"):
        return "random init"
    return w.rsplit(".", 1)[-1] if w.count(".") == 1 and "/" not in w else w


def model_name(model: dict) -> str:
    """A short name for the model of result.json: its name and weights, never a path or a hash
    (the full identity stays in the provenance block, :func:`settings_rows`).

    ``{"name": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1"}`` -> ``resnet18 (IMAGENET1K_V1)``;
    ``{"kind": "python", "file": "/x/mynet.py", "function": "build", "weights": {"checkpoint": "/y/m.pth",
    "sha256": ...}}`` -> ``mynet.py:build (m.pth)``; ``{"class": "dissect.demo.SceneNet", "checkpoint":
    "/x/scenenet.pt"}`` -> ``SceneNet (scenenet.pt)``; an hf folder, export or TorchScript file -> its
    folder or file name.
    """
    model = model or {}
    name = model.get("name") or str(model.get("class") or "").rsplit(".", 1)[-1]
    if not name and model.get("file"):
        name = _base(model["file"]) + (f":{model['function']}" if model.get("function") else "")
    if not name and model.get("ref"):
        name = _base(model["ref"])
    extra = _weights_text(model.get("weights")) if model.get("weights") else ""
    ckpt = model.get("checkpoint") or model.get("path") or ""
    if ckpt:
        base = _base(ckpt)
        name, extra = (name or base), (extra or (base if name else ""))
    if not name:
        return ""
    return f"{name} ({extra})" if extra and str(extra) != name else str(name)


def settings_rows(result: dict) -> list:
    """(key, text) rows of the collapsed settings block: model, store, settings, timings, version."""
    rows = []
    model = result.get("model") or {}
    for k, v in model.items():
        if v not in (None, ""):
            rows.append((f"model {k}", _fmt(v)))
    store = result.get("store") or {}
    if store:
        rows.append(("store", f"{store.get('path', '')} ({store.get('images', '?')} images)"))
        if store.get("fingerprint"):
            rows.append(("store fingerprint", str(store["fingerprint"])))
    for k, v in (result.get("settings") or {}).items():
        if v not in (None, "", []):
            rows.append((k.replace("_", " "), _fmt(v)))
    timings = result.get("timings") or {}
    if timings:
        rows.append(("timings", ", ".join(f"{k} {float(v):.1f} s" for k, v in timings.items())))
    if result.get("version"):
        rows.append(("version", str(result["version"])))
    return rows


def header_notes(result: dict, layer: bool = True) -> str:
    """Lines under a page's title (trusted HTML, escaped here): random weights stated plainly (never
    left to the metadata), and for a layer which tensor was captured and how it was laid out (a page must
    say what it scored)."""
    from html import escape

    out = []
    model = result.get("model") or {}
    if model.get("random_weights"):
        out.append(
            '<p class="warn"><strong>Random weights:</strong> this network is a random initialisation '
            "(<code>--weights none</code>), not a trained model; its units are a baseline.</p>"
        )
    s = result.get("settings") or {}
    if layer and s.get("selector"):
        lay = s.get("layout") or {}
        kind = lay.get("kind", "")
        if kind == "tokens" and lay.get("grid"):
            kind = (
                f"tokens ({lay.get('prefix', 0)} class/register dropped, {lay['grid'][0]}x{lay['grid'][1]} patch grid)"
            )
        calls = f", call {s['selector'].split('#')[1].split(':')[0]} of {s['calls']}" if "#" in s["selector"] else ""
        out.append(
            f'<p class="meta">Captured <code>{escape(str(s["selector"]))}</code>{escape(calls)}: '
            f"{escape(str(s.get('structure', 'tensor')))} output, layout {escape(kind)}"
            + (f" ({escape(str(lay.get('source')))})" if lay.get("source") else "")
            + "</p>"
        )
    return "".join(out)


def concepts_covered(units: Sequence[dict], iou_threshold: float = 0.04) -> int:
    """Distinct (category, label) pairs among the detector units."""
    return len({(u.get("category"), u.get("label")) for u in units if is_detector(u, iou_threshold) and u.get("label")})


def unit_name(index: int, result: dict, count: int) -> str:
    """How a page names unit ``index`` (0-based) of ``count``: "unit 12", or for an SAE's features
    (settings["dissected"] == "feature") "feature 1,234 of 8,192"."""
    if (result.get("settings") or {}).get("dissected") == "feature":
        return f"feature {index + 1:,} of {count:,}"
    return f"unit {index + 1}"


def sae_note(result: dict) -> str:
    """The line that says a page shows an SAE's features, with the SAE's summary (trusted HTML)."""
    from html import escape

    sae = (result.get("settings") or {}).get("sae")
    if not isinstance(sae, dict):
        return ""
    bits = [
        f"{sae.get('features', '?'):,} features on {sae.get('units', '?'):,} units",
        f"activation {sae.get('activation')}" + (f", k = {sae['k']}" if sae.get("k") else ""),
    ]
    if sae.get("explained_variance") is not None:
        bits.append(f"explained variance {float(sae['explained_variance']):.3f}")
    if sae.get("dead_features") is not None:
        bits.append(f"{sae['dead_features']:,} dead features")
    return (
        f'<p class="meta">Features of a sparse autoencoder ({escape(str(sae.get("format", "")))}: '
        f"{escape('; '.join(bits))}) from <code>{escape(str(sae.get('path', '')))}</code>, not the layer's units.</p>"
    )


def _unit_view(u: dict, thr: float, strips: dict, extras: dict, name: str = "") -> dict:
    i = int(u["unit_index"])
    others = [
        (c, display_name(str(pc["label"])), str(pc["label"]), float(pc.get("iou", 0.0)))
        for c, pc in (u.get("per_category") or {}).items()
        if c != u["category"] and pc.get("label")
    ]
    return {
        "unit": i + 1,
        "label": str(u["label"]),
        "display": display_name(str(u["label"])),
        "category": str(u["category"]),
        "iou": float(u.get("iou", 0.0)),
        "detector": is_detector(u, thr),
        "others": others,
        "strip": strips.get(i),
        "extra": extras.get(i + 1, ""),
        "name": name or f"unit {i + 1}",
    }


def layer_page(
    layer: str,
    result: dict,
    units_sorted: Sequence[dict],
    categories: Sequence[str],
    summary: dict,
    strips: dict,
    plot: Optional[str],
    index_href: Optional[str] = "../index.html",
    extras: Optional[dict] = None,
    extra_links: Sequence[tuple] = (),
    notes_extra: str = "",
) -> str:
    """The page of one layer.

    ``units_sorted``: result.json units, best IoU first; ``strips[unit_index] = (src, width, height)``
    of the unit's image strip (missing: no images); ``plot``: src of the detector bar chart or None;
    ``extras[unit (1-based)]``: trusted HTML lines from the analyses; ``extra_links``: (name, href);
    ``notes_extra``: trusted HTML lines under the title (predicted labels, open-vocabulary agreement).
    """
    thr = float((result.get("settings") or {}).get("iou_threshold", 0.04) or 0.04)
    per = ", ".join(f"{c} {n}" for c, n in summary["per_category"].items() if n)
    return (
        environment()
        .get_template("layer.html")
        .render(
            title=f"Dissection of {layer}",
            layer=layer,
            model_name=model_name(result.get("model") or {}),
            summary=summary,
            per_category=per,
            concepts=concepts_covered(units_sorted, thr),
            alpha=(result.get("settings") or {}).get("alpha", 0.05),
            constant_line=constant_text(summary, _what(result)),
            plot=plot,
            categories=list(categories),
            colors={c: category_color(c, categories) for c in categories},
            units=[
                _unit_view(u, thr, strips, extras or {}, unit_name(int(u["unit_index"]), result, len(units_sorted)))
                for u in units_sorted
            ],
            index_href=index_href,
            what=_what(result),
            settings=settings_rows(result),
            extra_links=list(extra_links),
            notes=header_notes(result) + sae_note(result) + notes_extra,
        )
    )


def _what(result: dict) -> str:
    return "feature" if (result.get("settings") or {}).get("dissected") == "feature" else "unit"


def index_page(
    layers: Sequence[tuple], categories: Sequence[str], plot: Optional[str], title: str = "Network Dissection"
) -> str:
    """Index over all layers. ``layers``: (name, href of its page, summary dict, result dict)."""
    rows = []
    for name, page_href, summ, result in layers:
        thr = float((result.get("settings") or {}).get("iou_threshold", 0.04) or 0.04)
        rows.append(
            {
                "name": name,
                "href": page_href,
                "folder": page_href.rsplit("/", 1)[0],
                "summary": summ,
                "concepts": concepts_covered(result.get("units") or [], thr),
                "predicted": predicted_detectors(result, thr),
            }
        )
    first = layers[0][3] if layers else {}
    store = first.get("store") or {}
    store_line = f"store {_base(store.get('path', ''))} ({count(store.get('images', '?'), 'image')})" if store else ""
    settings = [r for r in settings_rows({k: v for k, v in first.items() if k in ("model", "store", "version")})]
    models = sorted({m for r in rows for m in r["predicted"]})
    predicted_note = (
        f"Labels predicted by {'; '.join(models)} (segmentation model), not annotated: the detectors "
        f"carrying them are counted as 'predicted' per layer."
        if models
        else ""
    )
    return (
        environment()
        .get_template("index.html")
        .render(
            title=title,
            model_name=model_name(first.get("model") or {}),
            store_line=store_line,
            plot=plot,
            categories=list(categories),
            rows=rows,
            settings=settings,
            notes=header_notes(first, layer=False),
            predicted_note=predicted_note,
        )
    )


def href(*parts: str) -> str:
    """A relative URL from path components (each percent-quoted)."""
    return "/".join(quote(p) for p in parts)
