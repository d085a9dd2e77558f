"""OpenSurfaces ``opensurfaces-release-0``: the JSON tables and the label rendering of the release script.

The release holds Django fixture dumps (lists of ``{"model", "pk", "fields"}``), either at the
top of the folder or under ``opensurfaces/``. Facts from the release's own processing script:

* photos (``photos.photo.json``): kept when ``scene_category_correct`` and not ``special``;
  the image is ``<static root>/<image_orig>``, stored as ``photos/<pk>.jpg``;
* shapes (``shapes.materialshape.json``): kept when not ``special`` and ``high_quality``,
  drawn in order of ``num_vertices`` (descending, stable), each as the triangles
  ``triangles`` ("v1,v2,v3,...") over ``vertices`` ("x1,y1,...", fractions of width/height,
  scaled with ``int(x * w), int(y * h)``), later shapes over earlier ones;
* substances (``shapes.shapesubstance.json``): those not ``fail``, sorted by name, get red
  values 1, 2, ... (``label-substance-colors.csv``); a shape whose substance is not among them
  draws 0 (unlabeled);
* label images are drawn at a height of ``PHOTO_LABELS_HEIGHT`` (1,024) pixels and a width of
  ``int(1024 * aspect_ratio)`` (the photo's field), whatever the photo's own resolution; the
  original Broden build counted and shrank those planes (docs/format.md, "OpenSurfaces label
  planes").
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import numpy as np

#: Height of the label images the release script draws (its ``PHOTO_LABELS_HEIGHT``).
LABELS_HEIGHT = 1024

REQUIRED = ("photos.photo.json", "shapes.materialshape.json", "shapes.shapesubstance.json")


def release_dir(path: Path) -> Optional[Path]:
    """The folder holding the JSON tables (``path`` or ``path/opensurfaces``); None if neither."""
    for d in (path, path / "opensurfaces"):
        if all((d / f).is_file() for f in REQUIRED):
            return d
    return None


def load_fixture(path: Path) -> list:
    """Rows of a Django fixture dump as dicts of fields plus ``pk``; ValueError naming the file."""
    try:
        items = json.loads(Path(path).read_text("utf-8"))
        return [dict(it["fields"], pk=it["pk"]) for it in items]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an OpenSurfaces fixture file ({e.__class__.__name__}: {e})") from None


def substance_reds(substances: list) -> dict:
    """substance pk -> red value: non-failed substances sorted by name, numbered from 1."""
    ok = sorted(((s["pk"], s["name"]) for s in substances if not s.get("fail")), key=lambda t: t[1])
    return {pk: i + 1 for i, (pk, _) in enumerate(ok)}


def read_substance_colors(path: Path) -> dict:
    """``label-substance-colors.csv`` -> {red: substance name}; ValueError naming file and row."""
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                out[int(row["red_color"])] = str(row["substance_name"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: line {i}: expected substance_id,substance_name,red_color, got {row}") from None
    return out


def material_names(substance: str) -> tuple:
    """'Carpet/rug' -> ('carpet', 'rug'); 'Plastic - clear' -> ('plastic-clear',)."""
    out = []
    for part in substance.split("/"):
        n = part.replace(" - ", "-").strip().lower()
        if n and n not in out:
            out.append(n)
    return tuple(out)


def kept_photos(photos: list) -> list:
    """Photos the release script keeps, sorted by pk."""
    return sorted((p for p in photos if p.get("scene_category_correct") and not p.get("special")), key=lambda p: p["pk"])


def kept_shapes(shapes: list) -> list:
    """Shapes the release script keeps, in drawing order (num_vertices descending, stable)."""
    kept = [s for s in shapes if not s.get("special") and s.get("high_quality")]
    return sorted(kept, key=lambda s: s.get("num_vertices", 0), reverse=True)


def label_size(aspect_ratio: float, height: int = LABELS_HEIGHT) -> tuple:
    """(width, height) of a photo's label image as the release script draws it: ``height`` rows and
    ``int(height * aspect_ratio)`` columns. ValueError when the ratio gives no pixel or is not finite."""
    ratio = float(aspect_ratio)
    if not (ratio > 0 and ratio * height < 1e6):  # also refuses NaN and infinities
        raise ValueError(f"aspect_ratio {aspect_ratio!r} gives no usable label image width")
    w = int(height * ratio)
    if w < 1:
        raise ValueError(f"aspect_ratio {aspect_ratio!r} gives a label image {w} pixels wide")
    return w, height


def render_material(shapes: list, reds: dict, width: int, height: int) -> np.ndarray:
    """Draw ``shapes`` (in order) as filled triangles valued by their substance's red; H x W uint8."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(im)
    for s in shapes:
        value = reds.get(s["substance"], 0)
        xs = [float(t) for t in str(s["vertices"]).split(",") if t.strip()]
        pts = [(int(x * width), int(y * height)) for x, y in zip(xs[::2], xs[1::2])]
        tri = [int(t) for t in str(s["triangles"]).split(",") if t.strip()]
        for a, b, c in zip(tri[::3], tri[1::3], tri[2::3]):
            draw.polygon([pts[a], pts[b], pts[c]], fill=value)
    return np.asarray(im)
