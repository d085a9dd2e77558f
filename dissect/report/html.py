"""HTML of the report pages: static, self-contained (inline CSS and JS), nothing from the network.

Every page carries a small check script: after the ``load`` event it sets, on ``<html>``,
``data-ready="ok"`` (or ``"broken"``), ``data-images`` (count) and ``data-broken-images``
(their ``src``), and it records uncaught script errors in ``data-js-errors``. The browser
test reads these; a reader sees a warning line when an image failed to load.
"""
from __future__ import annotations

import json
from html import escape
from typing import Optional, Sequence
from urllib.parse import quote

from .plots import category_color
from .summary import is_detector

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1em;margin:0 0 .3em 0;font-weight:600}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.4em .6em}.meta{color:#555;font-size:.9em}.meta dt{font-weight:600;float:left;clear:left;width:9em}.meta dd{margin-left:9.5em}
.controls{position:sticky;top:0;background:#fff;padding:.6em 0;border-bottom:1px solid #ddd;z-index:2;display:flex;gap:1.2em;flex-wrap:wrap;align-items:center}
.unit{border-bottom:1px solid #eee;padding:.6em 0}
.unit[hidden]{display:none}
.cat{display:inline-block;color:#fff;border-radius:3px;padding:0 .4em;font-size:.8em;font-weight:500}
.label{font-size:1.1em;margin:0 .4em}
.iou{color:#444;font-variant-numeric:tabular-nums}
.nodet{color:#999}.badge{font-size:.75em;border:1px solid #2a7;color:#2a7;border-radius:3px;padding:0 .3em;margin-left:.4em}
.others{color:#666;font-size:.8em;margin:.2em 0}
.formula,.ablation{font-size:.85em;margin:.2em 0}
img.strip{display:block;max-width:100%;height:auto;image-rendering:auto}
figure{margin:1em 0;overflow-x:auto}figure img{max-width:none}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
#brokenwarn{color:#b00;font-weight:600}
"""

CHECK_JS = """
(function(){
  var root=document.documentElement, errors=[];
  window.addEventListener('error',function(e){
    if(e && e.target && e.target.tagName){return;}
    errors.push(String(e.message||e));root.setAttribute('data-js-errors',errors.join(' | '));
  },true);
  window.addEventListener('load',function(){
    var imgs=document.images,bad=[];
    for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){bad.push(imgs[i].getAttribute('src'));}}
    root.setAttribute('data-images',String(imgs.length));
    root.setAttribute('data-broken-images',bad.join(' '));
    root.setAttribute('data-ready',bad.length?'broken':'ok');
    if(bad.length){var w=document.getElementById('brokenwarn');if(w){w.textContent=bad.length+' image(s) failed to load: '+bad.join(', ');w.hidden=false;}}
  });
})();
"""

FILTER_JS = """
(function(){
  var cat=document.getElementById('cat'),q=document.getElementById('q'),det=document.getElementById('det');
  var units=document.querySelectorAll('#units .unit'),count=document.getElementById('count'),empty=document.getElementById('empty');
  function apply(){
    var c=cat.value,s=q.value.trim().toLowerCase(),d=det.checked,n=0;
    for(var i=0;i<units.length;i++){
      var u=units[i],ok=(!c||u.getAttribute('data-category')===c)&&(!s||u.getAttribute('data-label').toLowerCase().indexOf(s)>=0)&&(!d||u.getAttribute('data-detector')==='1');
      u.hidden=!ok;if(ok){n++;}
    }
    count.textContent=n+' of '+units.length+' units shown';empty.hidden=n>0;
    var h='';if(c){h+='cat='+encodeURIComponent(c);}if(s){h+=(h?'&':'')+'q='+encodeURIComponent(s);}if(d){h+=(h?'&':'')+'det=1';}
    if(window.history&&history.replaceState){history.replaceState(null,'',h?'#'+h:location.pathname);}
  }
  var p=location.hash.replace(/^#/,'').split('&');
  for(var i=0;i<p.length;i++){var kv=p[i].split('=');var v=decodeURIComponent(kv[1]||'');
    if(kv[0]==='cat'){cat.value=v;}else if(kv[0]==='q'){q.value=v;}else if(kv[0]==='det'){det.checked=v==='1';}}
  cat.addEventListener('change',apply);q.addEventListener('input',apply);det.addEventListener('change',apply);apply();
})();
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n<script>{CHECK_JS}</script>\n</head>\n"
        f"<body>\n{body}\n<p id=\"brokenwarn\" hidden></p>\n</body>\n</html>\n"
    )


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _meta(result: dict) -> str:
    rows = []
    model = result.get("model") or {}
    if model:
        rows.append(("model", ", ".join(f"{k}: {_fmt(v)}" for k, v in model.items() if v not in (None, ""))))
    store = result.get("store") or {}
    if store:
        rows.append(("store", f"{store.get('path', '')} ({store.get('images', '?')} images)"))
    for k, v in (result.get("settings") or {}).items():
        if v not in (None, "", []):
            rows.append((k.replace("_", " "), _fmt(v)))
    timings = result.get("timings") or {}
    if timings:
        rows.append(("timings", ", ".join(f"{k} {float(v):.1f} s" for k, v in timings.items())))
    return "<dl class=\"meta\">" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows) + "</dl>"


def header_notes(result: dict, layer: bool = True) -> str:
    """Lines under a page's title: random weights stated plainly (never left to the metadata), and
    for a layer which tensor was captured and how it was laid out (issue 11)."""
    out = []
    model = result.get("model") or {}
    if model.get("random_weights"):
        out.append("<p class=\"warn\"><strong>Random weights:</strong> this network is a random initialisation "
                   "(<code>--weights none</code>), not a trained model; its units are a baseline.</p>")
    s = result.get("settings") or {}
    if layer and s.get("selector"):
        lay = s.get("layout") or {}
        kind = lay.get("kind", "")
        if kind == "tokens" and lay.get("grid"):
            kind = f"tokens ({lay.get('prefix', 0)} class/register dropped, {lay['grid'][0]}x{lay['grid'][1]} patch grid)"
        calls = f", call {s['selector'].split('#')[1].split(':')[0]} of {s['calls']}" if "#" in s["selector"] else ""
        out.append(f"<p class=\"meta\">Captured <code>{escape(str(s['selector']))}</code>{escape(calls)}: "
                   f"{escape(str(s.get('structure', 'tensor')))} output, layout {escape(kind)}"
                   + (f" ({escape(str(lay.get('source')))})" if lay.get("source") else "") + "</p>")
    return "".join(out)


def _cat_badge(cat: str, order: Sequence[str]) -> str:
    return f"<span class=\"cat\" style=\"background:{category_color(cat, order)}\">{escape(cat)}</span>"


def summary_html(summary: dict, order: Sequence[str]) -> str:
    per = ", ".join(f"{escape(c)} {n}" for c, n in summary["per_category"].items() if n)
    return (f"<p><b>{summary['detectors']}</b> of {summary['units']} units are detectors"
            + (f" ({per})" if per else "") + ".</p>")


def layer_page(layer: str, result: dict, units_sorted: Sequence[dict], categories: Sequence[str], summary: dict,
               strips: dict, plot: Optional[str], index_href: Optional[str] = "../index.html",
               extras: Optional[dict] = None) -> str:
    """The page of one layer.

    ``extras[unit (1-based)]``: HTML added to the unit's card (its formula from dissect explain,
    links to the ablations that include it; see dissect.report.analyses).

    ``units_sorted``: result.json units, best IoU first; ``strips[unit_index] = (src, width, height)``
    of the unit's image strip (missing: no images); ``plot``: src of the detector bar chart or None.
    """
    thr = float((result.get("settings") or {}).get("iou_threshold", 0.04) or 0.04)
    parts = []
    if index_href:
        parts.append(f"<nav><a href=\"{escape(index_href)}\">&larr; all layers</a></nav>")
    parts.append(f"<h1>Layer <code>{escape(layer)}</code></h1>")
    parts.append(header_notes(result))
    parts.append(_meta(result))
    parts.append(summary_html(summary, categories))
    if plot:
        parts.append(f"<figure><img src=\"{escape(plot)}\" alt=\"detectors per concept of {escape(layer)}\">"
                     "<figcaption>Detector units per concept, grouped by category.</figcaption></figure>")
    options = "".join(f"<option value=\"{escape(c)}\">{escape(c)}</option>" for c in categories)
    parts.append(
        "<div class=\"controls\">"
        f"<label>Category <select id=\"cat\"><option value=\"\">all</option>{options}</select></label>"
        "<label>Concept <input id=\"q\" type=\"search\" placeholder=\"search concept name\" autocomplete=\"off\"></label>"
        "<label><input type=\"checkbox\" id=\"det\"> detectors only</label>"
        "<span id=\"count\"></span></div>"
    )
    cards = []
    for u in units_sorted:
        det = is_detector(u, thr)
        iou = float(u.get("iou", 0.0))
        head = (f"<h2>unit {int(u['unit_index']) + 1}"
                f"<span class=\"label\">{escape(str(u['label']))}</span>{_cat_badge(u['category'], categories)} "
                f"<span class=\"iou{'' if det else ' nodet'}\">IoU {iou:.3f}</span>"
                + ("<span class=\"badge\">detector</span>" if det else "") + "</h2>")
        others = []
        for c, pc in (u.get("per_category") or {}).items():
            if c != u["category"] and pc.get("label"):
                others.append(f"{escape(c)}: {escape(str(pc['label']))} {float(pc.get('iou', 0.0)):.3f}")
        body = head
        if others:
            body += "<p class=\"others\">best in other categories: " + "; ".join(others) + "</p>"
        body += (extras or {}).get(int(u["unit_index"]) + 1, "")
        strip = strips.get(int(u["unit_index"]))
        if strip:
            src, w, h = strip
            body += (f"<img class=\"strip\" src=\"{escape(src)}\" width=\"{w}\" height=\"{h}\" "
                     f"alt=\"top images of unit {int(u['unit_index']) + 1} with its mask\">")
        cards.append(
            f"<section class=\"unit\" data-category=\"{escape(str(u['category']))}\" "
            f"data-label=\"{escape(str(u['label']))}\" data-detector=\"{1 if det else 0}\" "
            f"data-unit=\"{int(u['unit_index']) + 1}\">{body}</section>"
        )
    parts.append("<div id=\"units\">\n" + "\n".join(cards) + "\n</div>")
    parts.append("<p id=\"empty\" hidden>No unit matches.</p>")
    parts.append(f"<script>{FILTER_JS}</script>")
    return _page(f"Dissection of {layer}", "\n".join(parts))


def index_page(layers: Sequence[tuple], categories: Sequence[str], plot: Optional[str], title: str = "Network Dissection") -> str:
    """Index over all layers. ``layers``: (name, href of its page, summary dict, result dict)."""
    parts = [f"<h1>{escape(title)}</h1>"]
    if layers:
        parts.append(header_notes(layers[0][3], layer=False))
        parts.append(_meta({k: v for k, v in layers[0][3].items() if k in ("model", "store")}))
    if plot:
        parts.append(f"<figure><img src=\"{escape(plot)}\" alt=\"unique detectors per category per layer\">"
                     "<figcaption>Unique detectors (distinct concepts among detector units) per category and layer."
                     "</figcaption></figure>")
    head = "".join(f"<th>{escape(c)}</th>" for c in categories)
    rows = []
    for name, href, summ, _ in layers:
        cells = "".join(f"<td>{summ['per_category'].get(c, 0)} / {summ['unique'].get(c, 0)}</td>" for c in categories)
        rows.append(f"<tr><td><a href=\"{escape(href)}\">{escape(name)}</a></td><td>{summ['units']}</td>"
                    f"<td>{summ['detectors']}</td>{cells}</tr>")
    parts.append("<table><thead><tr><th>layer</th><th>units</th><th>detectors</th>" + head + "</tr></thead><tbody>"
                 + "".join(rows) + "</tbody></table>")
    parts.append("<p class=\"meta\">Per category: detector units / unique concepts among them.</p>")
    return _page(title, "\n".join(parts))


def href(*parts: str) -> str:
    """A relative URL from path components (each percent-quoted)."""
    return "/".join(quote(p) for p in parts)
