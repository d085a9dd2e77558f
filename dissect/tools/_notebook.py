"""Notebook helpers behind :class:`dissect.api.DissectionResult`: units of a concept, a unit's top
images (paths, activations, masks), a matplotlib figure of a unit, HTML representations.

The masks are the tallied ones (``upsample(map, segmentation size, recorded mode) > T_k``,
dissect.report.masks), so what a notebook shows is what was counted.
"""

from __future__ import annotations

from html import escape
from typing import Optional, Sequence

import numpy as np

from ..errors import DissectError, NotDissectedError, UnitRangeError
from ..report.summary import display_name
from ..results import label_predicted_by, open_store, predicted_text


def unknown_concept(concept: str, names: Sequence[str]) -> "NotDissectedError":
    from broden_builder.shared import did_you_mean

    return NotDissectedError(f"no unit is labelled {concept!r}{did_you_mean(concept, names)}")


def matches(label: str, concept: str) -> bool:
    """``concept`` names ``label``: the raw label (``red-c``) or its display name (``red``)."""
    return label == concept or display_name(label) == concept


def top_images(res, unit: int, store=None, k: Optional[int] = None) -> list:
    """The top images of ``unit`` (1-based) of the LayerResult ``res``, best first.

    Returns one dict per image: ``row`` (0-based index.csv row), ``path`` (Path of the image),
    ``activation`` (the unit's maximum over the image, float), ``mask`` (bool [sh, sw] at the
    store's segmentation size: the pixels the tally counted for this unit), ``map`` (float32
    [h, w], the layer-resolution activation map). Needs the top-k maps (a result from a run,
    or loaded with ``load_maps=True``).
    """
    from ..report.masks import unit_mask

    if res.topk_indices is None or res.topk_maps is None:
        raise DissectError(f"layer {res.layer}: top images not loaded (DissectionResult.load(out, load_maps=True))")
    i = int(unit) - 1
    if not 0 <= i < len(res.units):
        raise UnitRangeError(f"layer {res.layer} has units 1..{len(res.units)}, not {unit}")
    st = open_store(res, store)
    seg = (res.store or {}).get("segmentation_size")
    mode = (res.settings or {}).get("upsample") or "bilinear"
    out = []
    n = res.topk_indices.shape[1] if k is None else min(int(k), res.topk_indices.shape[1])
    for j in range(n):
        row = int(res.topk_indices[i, j])
        if row < 0:
            continue
        amap = np.asarray(res.topk_maps[i, j], dtype=np.float32)
        sh, sw = tuple(seg) if seg else (st.rows[row].sh, st.rows[row].sw)
        out.append(
            {
                "row": row,
                "path": st.image_path(row),
                "activation": float(res.topk_values[i, j]),
                "mask": unit_mask(amap, float(res.thresholds[i]), sh, sw, mode),
                "map": amap,
            }
        )
    return out


def show_unit(res, unit: int, store=None, k: Optional[int] = None, size: float = 2.2):
    """A matplotlib Figure: the unit's top images with its mask outlined, titled with its label and IoU."""
    from matplotlib.figure import Figure  # no pyplot: works headless; Jupyter displays a Figure inline

    from ..report.masks import enlarge_mask, overlay

    st = open_store(res, store)
    items = top_images(res, unit, st, k)
    u = res.units[int(unit) - 1]
    fig = Figure(figsize=(size * max(1, len(items)), size + 0.5))
    axes = fig.subplots(1, max(1, len(items)), squeeze=False)[0]
    for ax in axes:
        ax.axis("off")
    for ax, it in zip(axes, items):
        rgb = st.load_image(it["row"])
        ax.imshow(overlay(rgb, enlarge_mask(it["mask"], rgb.shape[0], rgb.shape[1])))
        ax.set_title(f"{it['activation']:.3g}", fontsize=8)
    model = label_predicted_by(res, u)
    fig.suptitle(
        f"{res.layer} unit {int(unit)}: {display_name(str(u['label']))} "
        f"({u['category']}, IoU {float(u['iou']):.3f})" + (f"\nlabel {predicted_text(model)}" if model else "")
    )
    return fig


def layer_html(res, top: int = 10) -> str:
    """An HTML summary of a LayerResult: the summary line and its best detector units; a label a
    segmentation model predicted is marked "predicted by MODEL" beside it."""
    rows = "".join(
        f'<tr><td>{int(u["unit"])}</td><td title="{escape(str(u["label"]))}">{escape(display_name(str(u["label"])))}'
        + (f" <i>({escape(predicted_text(m))})</i>" if (m := label_predicted_by(res, u)) else "")
        + f"</td><td>{escape(str(u['category']))}</td><td>{float(u['iou']):.3f}</td></tr>"
        for u in res.detectors()[:top]
    )
    det = len(res.detectors())
    concepts = len({(u["category"], u["label"]) for u in res.detectors()})
    head = (
        f"<b>{escape(res.layer)}</b>: {det} of {len(res.units)} {res.what}s are detectors; "
        f"they cover {concepts} concept{'' if concepts == 1 else 's'}"
    )
    table = (
        (
            "<table><thead><tr><th>unit</th><th>label</th><th>category</th><th>IoU</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
        if rows
        else ""
    )
    more = f"<p>best {min(top, det)} of {det} detectors shown</p>" if det > top else ""
    return f"<div><p>{head}</p>{table}{more}</div>"
