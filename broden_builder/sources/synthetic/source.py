"""The ``synthetic`` source: procedurally generated scenes with true labels in every category.

Deterministic from ``seed`` (image i depends only on (seed, i)); any ``count`` and size.
Each scene class has a typical ground material and two typical object shapes, so a
network trained to classify scenes has reason to grow object and material detectors.

Recipe entry: ``{type: synthetic, count: 1000, seed: 0, native_size: 224}``
(``native_size`` defaults to the store's image size).
"""
from __future__ import annotations

import numpy as np

from .. import register_source
from ..base import ImageRecord, Resolved, Source

OBJECTS = ("disc", "square", "triangle", "ring", "cross", "bar")
PARTS = ("rim", "core", "tip", "arm", "end")
MATERIALS = ("grass", "water", "sand", "brick", "wood", "metal")
TEXTURES = ("striped", "dotted", "chequered", "zigzagged")
#: scene -> (typical ground material, typical objects)
SCENES = {
    "meadow": ("grass", ("disc", "triangle")),
    "harbor": ("water", ("bar", "square")),
    "desert": ("sand", ("triangle", "ring")),
    "courtyard": ("brick", ("cross", "disc")),
    "workshop": ("wood", ("square", "cross")),
    "factory": ("metal", ("ring", "bar")),
}
SCENE_NAMES = tuple(SCENES)
PALETTE = np.array([
    (220, 30, 30), (30, 170, 40), (40, 60, 220), (240, 220, 30), (250, 140, 20),
    (140, 40, 170), (250, 150, 190), (245, 245, 245), (15, 15, 15),
], dtype=np.float32)


def _material(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s = max(h, w) / 224.0
    noise = rng.normal(0, 1, (h, w)).astype(np.float32)
    if name == "grass":
        base = np.array([60, 140, 50], np.float32)
        v = 1 + 0.25 * np.sin(x / (1.3 * s) + 3 * np.sin(y / (7 * s))) + 0.1 * noise
    elif name == "water":
        base = np.array([40, 90, 185], np.float32)
        v = 1 + 0.25 * np.sin(y / (3 * s) + 2 * np.sin(x / (15 * s))) + 0.05 * noise
    elif name == "sand":
        base = np.array([215, 190, 130], np.float32)
        v = 1 + 0.12 * noise
    elif name == "brick":
        base = np.array([160, 65, 45], np.float32)
        row = (y // (12 * s)).astype(int)
        mortar = ((y % (12 * s)) < 2 * s) | (((x + (row % 2) * 12 * s) % (24 * s)) < 2 * s)
        v = np.where(mortar, 1.5, 1.0) + 0.05 * noise
    elif name == "wood":
        base = np.array([125, 80, 40], np.float32)
        v = 1 + 0.3 * np.sin(x / (2.5 * s) + 1.5 * np.sin(y / (20 * s))) + 0.05 * noise
    elif name == "metal":
        base = np.array([150, 152, 162], np.float32)
        v = 0.8 + 0.4 * (x + y) / (h + w) + 0.04 * noise
    else:  # pragma: no cover
        raise ValueError(name)
    return base[None, None, :] * v[..., None]


def _shape(kind: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if kind == "disc":
        return dx * dx + dy * dy < r * r
    if kind == "square":
        return (np.abs(dx) < r) & (np.abs(dy) < r)
    if kind == "triangle":
        t = (dy + r) / (2 * r)
        return (t > 0) & (t < 1) & (np.abs(dx) < t * r)
    if kind == "ring":
        d2 = dx * dx + dy * dy
        return (d2 < r * r) & (d2 > (0.55 * r) ** 2)
    if kind == "cross":
        return ((np.abs(dx) < r / 3) & (np.abs(dy) < r)) | ((np.abs(dy) < r / 3) & (np.abs(dx) < r))
    if kind == "bar":
        return (np.abs(dx) < r) & (np.abs(dy) < r / 3)
    raise ValueError(kind)  # pragma: no cover


def _parts(kind: str, mask: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Part codes (1-based into PARTS) inside an object mask."""
    out = np.zeros(mask.shape, np.int32)
    code = {p: i + 1 for i, p in enumerate(PARTS)}
    if kind in ("disc", "square"):
        d = np.sqrt(dx * dx + dy * dy) if kind == "disc" else np.maximum(np.abs(dx), np.abs(dy))
        out[mask & (d > 0.75 * r)] = code["rim"]
        out[mask & (d < 0.4 * r)] = code["core"]
    elif kind == "ring":
        out[mask & (np.sqrt(dx * dx + dy * dy) > 0.85 * r)] = code["rim"]
    elif kind == "triangle":
        out[mask & (dy < -0.4 * r)] = code["tip"]
    elif kind == "cross":
        out[mask & ~((np.abs(dx) < r / 3) & (np.abs(dy) < r / 3))] = code["arm"]
    elif kind == "bar":
        out[mask & (np.abs(dx) > 0.7 * r)] = code["end"]
    return out


def _fill(texture: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Brightness factor of the object fill pattern (the image's texture)."""
    p = max(r / 3.0, 2.0)
    if texture == "striped":
        on = (np.floor((dx + dy) / p) % 2) == 0
    elif texture == "dotted":
        on = ((dx % p) - p / 2) ** 2 + ((dy % p) - p / 2) ** 2 > (p / 3.2) ** 2
    elif texture == "chequered":
        on = ((np.floor(dx / p) + np.floor(dy / p)) % 2) == 0
    else:  # zigzagged
        on = (np.floor((dy + np.abs((dx % (2 * p)) - p)) / p) % 2) == 0
    return np.where(on, 1.0, 0.55).astype(np.float32)


def generate_scene(seed: int, index: int, size: int):
    """Generate image ``index`` of a seed: (rgb, object, part, material, scene code, texture code)."""
    rng = np.random.default_rng([int(seed), int(index)])
    h = w = int(size)
    scene = int(rng.integers(len(SCENE_NAMES)))
    ground, typical = SCENES[SCENE_NAMES[scene]]
    if rng.random() > 0.85:
        ground = MATERIALS[int(rng.integers(len(MATERIALS)))]
    others = [m for m in MATERIALS if m != ground]
    top = others[int(rng.integers(len(others)))]
    horizon = int(h * rng.uniform(0.3, 0.55))
    material = np.zeros((h, w), np.int32)
    material[:horizon] = MATERIALS.index(top) + 1
    material[horizon:] = MATERIALS.index(ground) + 1
    img = np.empty((h, w, 3), np.float32)
    img[:horizon] = _material(top, horizon, w, rng)
    img[horizon:] = _material(ground, h - horizon, w, rng)
    texture = int(rng.integers(len(TEXTURES)))
    obj = np.zeros((h, w), np.int32)
    part = np.zeros((h, w), np.int32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(2, 5))):
        kind = typical[int(rng.integers(2))] if rng.random() < 0.75 else OBJECTS[int(rng.integers(len(OBJECTS)))]
        r = float(rng.uniform(0.1, 0.2) * size)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        dx, dy = x - cx, y - cy
        mask = _shape(kind, dx, dy, r)
        color = PALETTE[int(rng.integers(len(PALETTE)))]
        shade = _fill(TEXTURES[texture], dx, dy, r)
        img[mask] = color[None, :] * shade[mask][:, None]
        obj[mask] = OBJECTS.index(kind) + 1
        part[mask] = _parts(kind, mask, dx, dy, r)[mask]
        material[mask] = 0
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    return rgb, obj, part, material, scene + 1, texture + 1


@register_source("synthetic")
class SyntheticSource(Source):
    """Procedural scenes: objects (shapes), parts, materials, scenes and textures."""

    type_name = "synthetic"
    prefix = "synthetic"
    license = "generated by broden-dissect (MIT)"
    citation = ""

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
        d.update({"version": "1", "count": self.count, "seed": self.seed, "native_size": self.native_size})
        return d
