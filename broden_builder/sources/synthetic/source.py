"""The ``synthetic`` source: a procedurally generated world with exact labels in all six categories.

The world is designed so that the paper's central finding can be reproduced in a minute on a CPU:
a network trained only to classify *scenes* needs object, part and material detectors, because

* a scene class is defined by *which objects and materials it contains* (:data:`SCENES`): each
  scene has two key objects and one ground material, and every object and every material is
  shared by two or three scenes, so no single object, material or colour decides the scene;
* objects are composed of parts (:data:`OBJECT_SHAPES`), each part in its own random colour, so
  an object is recognisable by its shape and the arrangement of its parts, never by its colour;
* colours (of parts and backgrounds), the background texture (the image-level ``texture``
  label), layouts (position, size, mirroring, a distractor object or material) all vary
  independently of the scene.

Concept sizes are chosen for the dissection statistic: a unit's mask is its top 0.5 % of
activations, so a concept covering a fraction f of all pixels can reach at most
IoU = 0.005 / f (for f > 0.005). Objects and materials therefore cover about 1 % of all pixels
each (small objects, material patches rather than whole grounds), parts 0.1-0.6 %.

Labels are exact: every pixel of an object carries its object and, outside the object's main
body (:data:`BODY`), exactly one of its parts; a material pixel is one not covered by an object;
the background is unlabeled (0) in object, part and material. Scene and texture are image-level.

Deterministic from ``seed`` (image i depends only on (seed, i)); any ``count`` and size.
Recipe entry: ``{type: synthetic, count: 1000, seed: 0, native_size: 224}``
(``native_size`` defaults to the store's image size).
"""
from __future__ import annotations

import numpy as np

from .. import register_source
from ..base import ImageRecord, Resolved, Source
from .schema import SyntheticEntry
from ..terms import folder_terms

#: the world's version, recorded in a store's build.json (``sources[].version``): it must change
#: whenever the same (seed, index) would draw another scene, so that no store of an older world is
#: taken for this one (the demo rebuilds its store when it differs)
WORLD_VERSION = "2"
#: object -> the shapes it is drawn from, in drawing order (a later shape covers an earlier one)
OBJECT_SHAPES = {
    "house": ("wall", "roof", "door"),
    "tree": ("trunk", "crown"),
    "car": ("body", "wheel"),
    "boat": ("hull", "sail"),
    "lamp": ("pole", "shade"),
    "person": ("leg", "torso", "head"),
}
#: the main body of each object is not a labelled part (as in Pascal-Part and ADE20K, whose
#: parts cover only some of an object): a unit that covers the whole object matches the object,
#: one that fires on a wheel or a roof matches the part
BODY = {"house": "wall", "tree": "crown", "car": "body", "boat": "hull", "lamp": "pole", "person": "torso"}
#: object -> its labelled parts
OBJECT_PARTS = {o: tuple(p for p in shapes if p != BODY[o]) for o, shapes in OBJECT_SHAPES.items()}
OBJECTS = tuple(OBJECT_SHAPES)
PARTS = tuple(p for parts in OBJECT_PARTS.values() for p in parts)
MATERIALS = ("grass", "water", "sand", "brick", "wood", "metal")
TEXTURES = ("striped", "dotted", "chequered", "zigzagged")
#: material groups: a scene's ground is any material of its group
GROUNDS = {"built": ("brick", "wood", "metal"), "natural": ("grass", "water", "sand")}
#: scene -> (key objects, ground group). Each pair of key objects makes two scenes, one on built
#: and one on natural ground, and every object serves two or three scenes: the scene needs both
#: the objects and the material (the material alone halves the choice, an object alone leaves 2-6).
SCENES = {
    "street": (("car", "lamp"), "built"),
    "road": (("car", "lamp"), "natural"),
    "dock": (("boat", "person"), "built"),
    "beach": (("boat", "person"), "natural"),
    "village": (("house", "tree"), "built"),
    "farm": (("house", "tree"), "natural"),
    "plaza": (("tree", "lamp"), "built"),
    "park": (("tree", "lamp"), "natural"),
}
SCENE_NAMES = tuple(SCENES)
#: saturated colours the parts are drawn in (jittered per draw); a part's colour is random
PALETTE = np.array([
    (210, 35, 35), (40, 160, 50), (40, 70, 215), (235, 215, 40), (245, 135, 25),
    (140, 50, 170), (245, 150, 190), (240, 240, 240), (25, 25, 25),
], dtype=np.float32)
#: muted background tones (greys, browns, off-white): most pixels of an image are background,
#: so keeping its colours few leaves the saturated colours rare enough (about 1 % of all pixels
#: each) for a colour unit to reach a visible IoU
BACKGROUND = np.array([
    (200, 200, 195), (150, 150, 150), (105, 105, 110), (165, 140, 110), (120, 95, 70), (215, 205, 180),
], dtype=np.float32)

# layout knobs (fractions of the image side)
OBJECT_RADIUS = (0.10, 0.15)
KEY_OBJECT_P = 0.9         # each key object of the scene is present with this probability
DISTRACTOR_P = 0.25        # one extra object of any kind
GROUND_P = 0.9             # a patch of a material of the scene's group
EXTRA_MATERIAL_P = 0.3     # a second patch (of the same group)
PATCH_SIDE = ((0.22, 0.42), (0.14, 0.24))  # material patch width, height ranges


def _material(name: str, h: int, w: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """An h x w x 3 float patch of a material: a characteristic pattern in a jittered base colour.

    ``scale`` = image side / 224 (pattern periods scale with the image).
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y += rng.uniform(0, 50)
    x += rng.uniform(0, 50)
    s = max(scale, 0.2)
    noise = rng.normal(0, 1, (h, w)).astype(np.float32)
    if name == "grass":
        base, v = (60, 145, 50), 1 + 0.3 * np.sin(x / (1.2 * s) + 3 * np.sin(y / (6 * s))) + 0.12 * noise
    elif name == "water":
        base, v = (40, 95, 190), 1 + 0.3 * np.sin(y / (2.5 * s) + 2 * np.sin(x / (12 * s))) + 0.05 * noise
    elif name == "sand":
        base, v = (215, 190, 130), 1 + 0.15 * noise
    elif name == "brick":
        row = np.floor(y / (10 * s))
        mortar = ((y % (10 * s)) < 2.2 * s) | (((x + (row % 2) * 10 * s) % (20 * s)) < 2.2 * s)
        base, v = (165, 65, 45), np.where(mortar, 1.45, 1.0) + 0.05 * noise
    elif name == "wood":
        base, v = (130, 85, 45), 1 + 0.3 * np.sin(x / (2.2 * s) + 1.5 * np.sin(y / (18 * s))) + 0.05 * noise
    elif name == "metal":
        base, v = (150, 155, 165), 1 + 0.18 * np.sin((x + y) / (1.5 * s)) + 0.04 * noise
    else:  # pragma: no cover
        raise ValueError(name)
    tint = np.asarray(base, np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    return tint[None, None, :] * v[..., None]


def _texture(name: str, h: int, w: int, period: float, angle: float) -> np.ndarray:
    """A 0/1 h x w pattern of an image-level texture (period in pixels, orientation in radians)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * x + s * y) / period, (-s * x + c * y) / period
    if name == "striped":
        on = np.floor(u) % 2 == 0
    elif name == "dotted":
        on = (u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2 < 0.09
    elif name == "chequered":
        on = (np.floor(u) + np.floor(v)) % 2 == 0
    elif name == "zigzagged":
        on = np.floor(v + np.abs(u % 2 - 1)) % 2 == 0
    else:  # pragma: no cover
        raise ValueError(name)
    return on.astype(np.float32)


def _trapezoid(u, v, top: float, bottom: float, w_top: float, w_bottom: float):
    """Inside the trapezoid between heights top < bottom with half-widths w_top, w_bottom."""
    t = (v - top) / (bottom - top)
    return (t >= 0) & (t <= 1) & (np.abs(u) <= w_top + t * (w_bottom - w_top))


def object_parts(kind: str, u: np.ndarray, v: np.ndarray) -> dict:
    """The part masks of one object in its own frame (u right, v down; the object fills about [-1, 1]^2).

    Returns {shape name: bool mask} (the parts and the body), in drawing order (later shapes cover earlier ones).
    """
    disc = lambda cu, cv, r: (u - cu) ** 2 + (v - cv) ** 2 <= r * r
    box = lambda u0, u1, v0, v1: (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
    if kind == "house":
        return {"wall": box(-0.8, 0.8, -0.2, 1.0), "roof": _trapezoid(u, v, -1.0, -0.2, 0.0, 1.0),
                "door": box(-0.22, 0.22, 0.35, 1.0)}
    if kind == "tree":
        return {"trunk": box(-0.15, 0.15, 0.0, 1.0), "crown": disc(0.0, -0.35, 0.65)}
    if kind == "car":
        return {"body": box(-1.0, 1.0, -0.05, 0.5) | box(-0.55, 0.45, -0.5, 0.0),
                "wheel": disc(-0.58, 0.55, 0.3) | disc(0.58, 0.55, 0.3)}
    if kind == "boat":
        return {"hull": _trapezoid(u, v, 0.35, 0.8, 1.0, 0.6),
                "sail": (u >= 0) & (v >= -1.0) & (v <= 0.3) & (u <= 0.8 * (v + 1.0) / 1.3)}
    if kind == "lamp":
        return {"pole": box(-0.09, 0.09, -0.5, 1.0) | box(-0.35, 0.35, 0.88, 1.0),
                "shade": _trapezoid(u, v, -1.0, -0.5, 0.22, 0.55)}
    if kind == "person":
        return {"leg": box(-0.28, -0.06, 0.3, 1.0) | box(0.06, 0.28, 0.3, 1.0),
                "torso": _trapezoid(u, v, -0.42, 0.35, 0.3, 0.38),
                "head": disc(0.0, -0.7, 0.26)}
    raise ValueError(kind)  # pragma: no cover


def _place(size: int, boxes: list, rng: np.random.Generator, half_w: float, half_h: float, tries: int = 20):
    """A centre for a box of the given half sizes, overlapping earlier boxes as little as tried for."""
    best, best_overlap = None, None
    for _ in range(tries):
        cx = rng.uniform(half_w, size - half_w)
        cy = rng.uniform(half_h, size - half_h)
        overlap = 0.0
        for (bx, by, bw, bh) in boxes:
            ox = max(0.0, min(cx + half_w, bx + bw) - max(cx - half_w, bx - bw))
            oy = max(0.0, min(cy + half_h, by + bh) - max(cy - half_h, by - bh))
            overlap += ox * oy
        if best is None or overlap < best_overlap:
            best, best_overlap = (cx, cy), overlap
        if overlap == 0:
            break
    return best


def _color(rng: np.random.Generator, avoid: int = -1, palette: np.ndarray = PALETTE) -> tuple:
    """A random palette entry (index, jittered RGB), never the entry ``avoid``."""
    k = int(rng.integers(len(palette) - (avoid >= 0)))
    if avoid >= 0 and k >= avoid:
        k += 1
    return k, palette[k] * np.float32(rng.uniform(0.9, 1.08))


def generate_scene(seed: int, index: int, size: int):
    """Generate image ``index`` of a seed at ``size`` x ``size``.

    Returns ``(rgb uint8[H,W,3], object int32[H,W], part int32[H,W], material int32[H,W],
    scene code, texture code)``; codes are 1-based into OBJECTS, PARTS, MATERIALS, SCENE_NAMES,
    TEXTURES, 0 = unlabeled.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    h = w = int(size)
    scene = int(rng.integers(len(SCENE_NAMES)))
    keys, ground = SCENES[SCENE_NAMES[scene]]
    texture = int(rng.integers(len(TEXTURES)))

    # background: a random colour modulated by the image's texture (image-level label)
    bg_k, bg = _color(rng, palette=BACKGROUND)
    _, bg2 = _color(rng, avoid=bg_k, palette=BACKGROUND)
    mix = np.float32(rng.uniform(0.3, 0.6))
    pattern = _texture(TEXTURES[texture], h, w, period=max(3.0, size / rng.uniform(9, 14)),
                       angle=float(rng.uniform(0, np.pi)))
    img = (bg[None, None, :] * (1 - mix * pattern[..., None]) + bg2[None, None, :] * (mix * pattern[..., None]))
    img = img.astype(np.float32)

    group = GROUNDS[ground]
    mats = [group[int(rng.integers(len(group)))]] if rng.random() < GROUND_P else []
    if rng.random() < EXTRA_MATERIAL_P:
        mats.append(group[int(rng.integers(len(group)))])
    material = _paint_materials(rng, img, mats, size)

    kinds = [k for k in keys if rng.random() < KEY_OBJECT_P]
    if rng.random() < DISTRACTOR_P:
        kinds.append(OBJECTS[int(rng.integers(len(OBJECTS)))])
    order = rng.permutation(len(kinds))
    obj, part = _paint_objects(rng, img, material, [kinds[i] for i in order], size)

    img += rng.normal(0, 4.0, img.shape).astype(np.float32)
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    return rgb, obj, part, material, scene + 1, texture + 1


def _paint_materials(rng, img: np.ndarray, mats: list, size: int) -> np.ndarray:
    """Paint one ground patch per material of ``mats`` into ``img`` (H x W x 3 float32, in place);
    returns the material plane (H x W int32, 1-based into MATERIALS)."""
    h, w = img.shape[:2]
    scale = size / 224.0
    material = np.zeros((h, w), np.int32)
    boxes: list = []
    for m in mats:
        pw = int(round(rng.uniform(*PATCH_SIDE[0]) * w))
        ph = int(round(rng.uniform(*PATCH_SIDE[1]) * h))
        pw, ph = max(2, min(pw, w)), max(2, min(ph, h))
        cx, cy = _place(size, boxes, rng, pw / 2, ph / 2)
        x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
        x0, y0 = min(max(0, x0), w - pw), min(max(0, y0), h - ph)
        yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
        if rng.random() < 0.5:  # an elliptical patch, else rectangular
            inside = ((xx + 0.5 - pw / 2) / (pw / 2)) ** 2 + ((yy + 0.5 - ph / 2) / (ph / 2)) ** 2 <= 1
        else:
            inside = np.ones((ph, pw), bool)
        tex = _material(m, ph, pw, scale, rng)
        region = img[y0:y0 + ph, x0:x0 + pw]
        region[inside] = tex[inside]
        material[y0:y0 + ph, x0:x0 + pw][inside] = MATERIALS.index(m) + 1
        boxes.append((x0 + pw / 2, y0 + ph / 2, pw / 2, ph / 2))
    return material


def _paint_objects(rng, img: np.ndarray, material: np.ndarray, kinds: list, size: int) -> tuple:
    """Paint the objects ``kinds`` (in drawing order) into ``img`` in place, clearing ``material``
    under them; returns the object and part planes (H x W int32, 1-based into OBJECTS, PARTS)."""
    h, w = img.shape[:2]
    obj = np.zeros((h, w), np.int32)
    part = np.zeros((h, w), np.int32)
    obj_boxes: list = []
    for kind in kinds:
        r = float(rng.uniform(*OBJECT_RADIUS) * size)
        if kind == "lamp":
            r *= 1.25  # thin: a little taller to stay visible
        cx, cy = _place(size, obj_boxes, rng, r, r)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        x0, x1 = max(0, int(np.floor(cx - r - 1))), min(w, int(np.ceil(cx + r + 1)))
        y0, y1 = max(0, int(np.floor(cy - r - 1))), min(h, int(np.ceil(cy + r + 1)))
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u, v = flip * (xx + 0.5 - cx) / r, (yy + 0.5 - cy) / r
        shade = (1.0 - 0.12 * v)[..., None]  # light from above
        used = -1
        for pname, mask in object_parts(kind, u, v).items():
            used, col = _color(rng, avoid=used)
            if not mask.any():
                continue
            img[y0:y1, x0:x1][mask] = (col[None, None, :] * shade)[mask]
            obj[y0:y1, x0:x1][mask] = OBJECTS.index(kind) + 1
            part[y0:y1, x0:x1][mask] = PARTS.index(pname) + 1 if pname in PARTS else 0
            material[y0:y1, x0:x1][mask] = 0
        obj_boxes.append((cx, cy, r, r))
    return obj, part


@register_source("synthetic")
class SyntheticSource(Source):
    """Procedural scenes: objects with parts, material patches, scenes and background textures."""

    type_name = "synthetic"
    config_schema = SyntheticEntry  # the recipe keys (schema.py)
    prefix = "synthetic"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        self.count = int(self.config.get("count", 1000))
        self.seed = int(self.config.get("seed", 0))
        self.native_size = int(self.config.get("native_size", image_size))
        if self.count < 0:
            raise ValueError(f"synthetic: count must be >= 0, got {self.count}")

    def vocabulary(self) -> dict:
        return {
            "object": {i + 1: (n,) for i, n in enumerate(OBJECTS)},
            "part": {i + 1: (n,) for i, n in enumerate(PARTS)},
            "material": {i + 1: (n,) for i, n in enumerate(MATERIALS)},
            "scene": {i + 1: (n,) for i, n in enumerate(SCENE_NAMES)},
            "texture": {i + 1: (n,) for i, n in enumerate(TEXTURES)},
        }

    def records(self) -> list:
        width = max(6, len(str(max(self.count - 1, 0))))
        return [ImageRecord(f"synthetic_{self.seed}_{i:0{width}d}", {"index": i}) for i in range(self.count)]

    def resolve(self, record: ImageRecord) -> Resolved:
        rgb, obj, part, material, scene, texture = generate_scene(self.seed, record.meta["index"], self.native_size)
        return Resolved(
            image=rgb,
            pixel={"object": [obj], "part": [part], "material": [material]},
            image_level={"scene": [scene], "texture": [texture]},
        )

    def provenance(self) -> dict:
        d = super().provenance()
        d.update({"version": WORLD_VERSION, "count": self.count, "seed": self.seed, "native_size": self.native_size})
        return d
