"""Per-unit lines the layer page adds from the analyses written next to the result:
``explanations.csv`` (dissect explain: the unit's formula) and ``ablations.json`` (dissect
ablate: links to the per-class accuracy CSVs of the ablations that include the unit).
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Union
from urllib.parse import quote


def unit_extras(layer_dir: Union[str, Path]) -> dict:
    """{unit (1-based): HTML snippet} for the layer page of ``layer_dir`` (empty without analyses).
    A malformed analysis file is skipped with a note instead of failing the report."""
    d = Path(layer_dir)
    out: dict = {}
    try:
        from ..explain.output import read_explanations

        for u, r in read_explanations(d).items():
            if r["formula"]:
                out[u] = (f"<p class=\"formula\">formula: <b>{escape(r['formula'])}</b> IoU {r['iou']:.3f}"
                          f" (best single concept {escape(r['single_label'])} {r['single_iou']:.3f}; "
                          f"<a href=\"explanations.csv\">explanations.csv</a>)</p>")
    except ValueError:
        pass
    path = d / "ablations.json"
    if path.is_file():
        try:
            entries = json.loads(path.read_text("utf-8"))
        except ValueError:
            entries = []
        for e in entries if isinstance(entries, list) else []:
            try:
                units = [int(x) for x in e["units"]]
                link = (f"<a href=\"{quote(str(e['file']))}\">units {', '.join(map(str, units))} set to "
                        f"{escape(str(e.get('mode', '')))}: accuracy {float(e['accuracy_before']):.3f} &rarr; "
                        f"{float(e['accuracy_after']):.3f}</a>")
            except (KeyError, TypeError, ValueError):
                continue
            for u in units:
                out[u] = out.get(u, "") + f"<p class=\"ablation\">ablation: {link}</p>"
    return out


__all__ = ["unit_extras"]
