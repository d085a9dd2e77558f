"""Per-unit lines the layer page adds from the analyses written next to the result:
``explanations.csv`` (dissect explain: the unit's formula), ``ablations.json`` (dissect
ablate: links to the per-class accuracy CSVs of the ablations that include the unit),
``descriptions.csv`` (dissect describe: open-vocabulary words), and the store's predicted labels
(build.json ``predicted_labels``: masks a segmentation model predicted, told apart from annotations).
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
                out[u] = (
                    f'<p class="formula">formula: <b>{escape(r["formula"])}</b> IoU {r["iou"]:.3f}'
                    f" (best single concept {escape(r['single_label'])} {r['single_iou']:.3f}; "
                    f'<a href="explanations.csv">explanations.csv</a>)</p>'
                    + (
                        f'<p class="predicted">formula labels predicted by a segmentation model, not '
                        f"annotated: {escape(r['predicted_by'])}</p>"
                        if r.get("predicted_by")
                        else ""
                    )
                )
    except ValueError:
        pass
    _add(out, _description_lines(d))
    path = d / "ablations.json"
    if path.is_file():
        try:
            entries = json.loads(path.read_text("utf-8"))
        except ValueError:
            entries = []
        for e in entries if isinstance(entries, list) else []:
            try:
                units = [int(x) for x in e["units"]]
                link = (
                    f'<a href="{quote(str(e["file"]))}">units {", ".join(map(str, units))} set to '
                    f"{escape(str(e.get('mode', '')))}: accuracy {float(e['accuracy_before']):.3f} &rarr; "
                    f"{float(e['accuracy_after']):.3f}</a>"
                )
            except (KeyError, TypeError, ValueError):
                continue
            for u in units:
                out[u] = out.get(u, "") + f'<p class="ablation">ablation: {link}</p>'
    return out


def _add(out: dict, lines: dict) -> None:
    for u, html in lines.items():
        out[u] = out.get(u, "") + html


def _description_lines(d: Path) -> dict:
    """{unit: HTML} of descriptions.csv: the top 5 words, and whether the IoU label is among them."""
    from ..describe import read_descriptions

    try:
        rows = read_descriptions(d)
    except ValueError:
        return {}
    out = {}
    for u, r in rows.items():
        hit = (
            ""
            if r["in_top5"] is None
            else (" (the IoU label is among them)" if r["in_top5"] else " (the IoU label is not among them)")
        )
        out[u] = (
            f'<p class="words">open vocabulary, top 5 words (CLIP-Dissect): <b>{escape(r["words"][0])}</b>'
            + "".join(f"; {escape(w)}" for w in r["words"][1:])
            + f" (similarity {r['similarity']:.3g}){hit}</p>"
        )
    return out


def store_predicted_labels(store_path) -> dict:
    """{label name: "MODEL"} of the labels a segmentation model predicted in the store at ``store_path``
    (build.json ``predicted_labels``); {} for a store of annotations only, or when unreadable."""
    try:
        info = json.loads((Path(store_path) / "build.json").read_text("utf-8"))
        pred = info.get("predicted_labels") or {}
        return {str(name): ", ".join(str(m.get("model")) for m in rec.get("models", [])) for name, rec in pred.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def predicted_lines(units, predicted: dict) -> dict:
    """{unit (1-based): HTML} marking the units whose IoU label a segmentation model predicted."""
    out = {}
    for u in units:
        model = u.get("predicted_by") or predicted.get(str(u.get("label")))
        if model:
            out[int(u["unit_index"]) + 1] = (
                f'<p class="predicted">label predicted by {escape(model)} (segmentation model), not annotated</p>'
            )
    return out


def layer_notes(layer_dir: Union[str, Path], units, predicted: dict) -> str:
    """Lines under the layer page's title: predicted labels, and how often the IoU label is among the words."""
    from ..describe import read_descriptions

    lines = []
    models = sorted({m for u in units for m in [u.get("predicted_by") or predicted.get(str(u.get("label")))] if m})
    if models:
        n = sum(1 for u in units if u.get("predicted_by") or predicted.get(str(u.get("label"))))
        lines.append(
            f'<p class="meta">{n} unit{"s" if n != 1 else ""} carry labels predicted by '
            f"{escape('; '.join(models))} (a segmentation model), not annotated: they are marked.</p>"
        )
    try:
        rows = read_descriptions(layer_dir)
    except ValueError:
        rows = {}
    judged = [r for r in rows.values() if r["in_top5"] is not None and r["iou_label"]]
    if judged:
        hits = sum(1 for r in judged if r["in_top5"])
        lines.append(
            f'<p class="meta">Open vocabulary (<a href="descriptions.csv">descriptions.csv</a>): the IoU '
            f"label is among a unit's top 5 words for {hits} of {len(judged)} units.</p>"
        )
    return "".join(lines)


__all__ = ["unit_extras", "store_predicted_labels", "predicted_lines", "layer_notes"]
