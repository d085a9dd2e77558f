"""The ``segmenter`` source: concept masks for any folder of images, predicted by a segmentation model.

Recipe entry::

    - type: segmenter
      images: my_images                 # *.jpg / *.png / ... (searched recursively), or
                                        #   {dataset: saved_ds, split: train, image_column: image}
                                        #   (a Hugging Face dataset), or {source: {type: ade20k, path: ...}}
                                        #   (the images of another source entry; images.py)
      model: hf:models/segformer-ade    # or torchvision:NAME:CHECKPOINT, or path/file.py:function
      threshold: 0.5                    # least confidence of a labelled pixel: a number, or
                                        #   {class name: number} (other classes 0); default 0
      min_area: 0.01                    # a class covering less of an image (a fraction) is removed there
      categories: {grass: material}     # class name -> category (default object)
      drop: [background]                # classes never written (their pixels stay unlabelled);
                                        #   torchvision's '__background__' is never written
      batch_size: 8                     # images per model call
      device: auto                      # cpu, cuda, cuda:1, ... (auto: cuda when available)

Models (models.py): a Hugging Face semantic or panoptic segmentation model saved in a local
folder (``id2label`` names the classes), a torchvision segmentation model with a local
checkpoint (the classes of its weights' metadata), or ``file.py:function`` returning an object
with ``classes`` (C names) that maps float [B, 3, H, W] RGB in [0, 1] to scores [B, C, H, W]
(or [B, C, h, w], upsampled to the image). Such an object may set ``exclusive = True`` (one class
per pixel across categories, as softmax models are read) and ``config`` (recorded).

How a pixel is labelled (labels.py): softmax models give a pixel its best class over all classes;
a ``file.py`` model's scores are read per category (the best class of each category). The pixel
stays unlabelled when that score is below the threshold or not above 0, or the class is dropped.
Labels are computed at the native pixels the store's resize rule samples (the store's planes
are exactly those of upsampling the scores to the image and resizing with the store's rule), in
batches on the chosen device, before pass 1 (``prepare``), and kept in the build's staging area,
so an interrupted build resumes without predicting again.

Provenance: build.json records the model (path, sha256 of its weights, config), the thresholds,
and that every label of this source is predicted, not annotated ("predicted_labels").
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .schema import SegmenterEntry
from ..terms import folder_terms
from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceDataError
from ..common import apply_rename
from ...resize import expand_sampled, sampled_indices
from .labels import class_thresholds, label_planes, scores_at
from .images import image_set
from .models import Segmenter, check_output, load_segmenter

log = logging.getLogger(__name__)

IMAGE_LEVEL = frozenset({"scene", "texture", "color"})
PREDICTED = "predicted by a segmentation model, not annotated"
#: class names that mean "no concept" (torchvision's VOC models): always left unlabelled, as if dropped
UNLABELLED_CLASSES = frozenset({"__background__"})


def _device(name: str) -> str:
    if name in ("auto", "", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


@register_source("segmenter")
class SegmenterSource(Source):
    """Images of a folder labelled by a segmentation model (module docstring)."""

    type_name = "segmenter"
    prefix = "segmenter"
    config_schema = SegmenterEntry  # the recipe keys (schema.py)
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        c = self.config
        for key in ("images", "model"):
            if not c.get(key):
                raise SourceDataError(f"segmenter source: '{key}' is required (images: DIR, model: SPEC)")
        self.images = image_set(c["images"], image_size, segmentation_size)
        self.model_spec = str(c["model"])
        self.threshold = c.get("threshold", 0.0)
        self.min_area = float(c.get("min_area", 0.0))
        self.class_categories = {str(k): str(v).strip().lower() for k, v in (c.get("categories") or {}).items()}
        self.drop = [str(d) for d in (c.get("drop") or [])]
        self.batch_size = int(c.get("batch_size", 8))
        self.device = _device(c.get("device", "auto"))
        self.rename = dict(c.get("rename") or {})
        self.license = str(c.get("license", self.license))
        self.citation = str(c.get("citation", ""))
        if not 0.0 <= self.min_area <= 1.0:
            raise SourceDataError(f"segmenter source: min_area is a fraction of the image in 0..1, got {self.min_area}")
        if self.batch_size < 1:
            raise SourceDataError(f"segmenter source: batch_size must be >= 1, got {self.batch_size}")
        bad = sorted({str(v) for v in self.class_categories.values() if v in IMAGE_LEVEL or not v})
        if bad:
            raise SourceDataError(
                f"segmenter source: categories maps classes to {bad}: a model's masks may go to object (the "
                f"default), part, material or a new category, not to scene or texture (one label per image, "
                f"not per pixel) nor to color (the build's own per-pixel colour names, recipe key color: true)")
        self._seg: Optional[Segmenter] = None
        self._work: Optional[Path] = None  # set by prepare(), with the settings key: workers never load the model
        self._key: Optional[str] = None

    def __getstate__(self):  # sent to worker processes: the model stays in the parent
        d = dict(self.__dict__)
        d["_seg"] = None
        return d

    # ------------------------------------------------------------------ the model
    def segmenter(self) -> Segmenter:
        """The loaded model, checked once: names, options, and one probe call's output shape."""
        if self._seg is None:
            seg = load_segmenter(self.model_spec, self.device)
            self._check_names(seg)
            try:
                probe = seg.scores(torch.full((1, 3, 32, 32), 0.5))
            except Exception as e:  # the user's model failing on a plain grey image: say so in one line
                raise SourceDataError(f"model {self.model_spec!r} fails on a 32x32 grey probe image "
                                      f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
            check_output(seg, probe, 1, f"model {self.model_spec!r}")
            self._seg = seg
        return self._seg

    def _check_names(self, seg: Segmenter) -> None:
        where = f"model {self.model_spec!r}"
        names = [str(n) for n in seg.classes]
        if not names or any(not n.strip() for n in names):
            raise SourceDataError(f"{where}: its class names must be non-empty text, got {names[:8]}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SourceDataError(f"{where}: class names appear twice: {dup[:5]}")
        for key, given in (("categories", list(self.class_categories)), ("drop", self.drop)):
            unknown = [n for n in given if n not in names]
            if unknown:
                raise SourceDataError(f"segmenter source: '{key}' names classes the model does not have: {unknown[:5]}")
        try:
            class_thresholds(names, self.threshold, "segmenter source")
        except (TypeError, ValueError) as e:
            raise SourceDataError(str(e) if isinstance(e, ValueError) else f"segmenter source: bad threshold {self.threshold!r}") from None

    def _categories(self) -> list:
        return [self.class_categories.get(n, "object") for n in self.segmenter().classes]

    def _settings_key(self) -> str:
        """Identifies the predictions: the model's weights and every option that changes a label."""
        ident = self.segmenter().identity
        blob = json.dumps([ident.get("sha256"), ident.get("spec"), self.threshold, self.min_area, self.class_categories,
                           self.drop, self.segmentation_size], sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ interface
    def check(self) -> None:
        self.images.check()
        self.segmenter()

    def image_level_categories(self) -> frozenset:
        return frozenset({"scene", "texture"}) - set(self.class_categories.values())

    def vocabulary(self) -> dict:
        seg = self.segmenter()
        out: dict = {}
        for k, (name, cat) in enumerate(zip(seg.classes, self._categories())):
            out.setdefault(cat, {})
            if name not in self.drop and name not in UNLABELLED_CLASSES:
                out[cat][k + 1] = apply_rename((str(name),), self.rename)
        return out

    def records(self) -> list:
        return self.images.records()

    def _prediction_path(self, record: ImageRecord) -> Optional[Path]:
        if self._work is None or self._key is None:
            return None
        return self._work / self._key / (hashlib.sha1(record.basename.encode()).hexdigest() + ".npz")

    def prepare(self, records: list, work: Path, quiet: bool = True) -> None:
        """Predict the label planes of ``records`` in batches (before pass 1); resumable."""
        from ...progress import progress
        from ...store.atomic import atomic_write_bytes

        self._work, self._key = Path(work), self._settings_key()
        todo = [r for r in records if not self._prediction_path(r).exists()]
        chunk = self.batch_size * 4
        bar = progress(total=len(todo), quiet=quiet, desc="segment", unit="img")
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            for rec, planes in self._predict_records(part):
                buf = io.BytesIO()
                np.savez_compressed(buf, **{"c_" + c: p for c, p in planes.items()})
                atomic_write_bytes(self._prediction_path(rec), buf.getvalue())
            bar.update(len(part))
        bar.close()

    def _predict_records(self, records: list):
        """(record, {category: [S, S] plane}) for the readable images of ``records``, batched by image size."""
        images = []
        for rec in records:
            try:
                images.append((rec, self.images.load(rec)))
            except BadSourceItem:
                continue  # resolve() raises it again, and the build skips the image
        by_shape: dict = {}
        for rec, rgb in images:
            by_shape.setdefault(rgb.shape[:2], []).append((rec, rgb))
        for shape, group in by_shape.items():
            for b in range(0, len(group), self.batch_size):
                batch = group[b:b + self.batch_size]
                for (rec, _), planes in zip(batch, self.predict([rgb for _, rgb in batch])):
                    yield rec, planes

    def predict(self, images: list) -> list:
        """{category: int32 plane [S, S] of source codes} per image; ``images``: H x W x 3 uint8, one size."""
        seg = self.segmenter()
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
        scores = seg.scores(x)
        check_output(seg, scores, len(images), f"model {self.model_spec!r}")
        H, W = images[0].shape[:2]
        S = self.segmentation_size
        rows, cols = sampled_indices(H, S), sampled_indices(W, S)
        cats = self._categories()
        thr = class_thresholds(seg.classes, self.threshold, "segmenter source")
        keep = torch.tensor([n not in self.drop and n not in UNLABELLED_CLASSES for n in seg.classes])
        return [label_planes(scores_at(s, (H, W), rows, cols), cats, thr, keep, seg.exclusive, self.min_area)
                for s in scores]

    def resolve(self, record: ImageRecord) -> Resolved:
        rgb = self.images.load(record)
        path = self._prediction_path(record)
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as z:
                planes = {k[2:]: z[k] for k in z.files}
        else:  # not prepared (a caller outside the build): predict this one image
            planes = self.predict([rgb])[0]
        H, W = rgb.shape[:2]
        return Resolved(image=rgb, pixel={c: [expand_sampled(p, H, W)] for c, p in planes.items()})

    # ------------------------------------------------------------------ provenance
    def label_provenance(self) -> dict:
        """What build.json records for every label of this source (they are predicted, not annotated)."""
        ident = self.segmenter().identity
        return {"model": ident.get("spec"), "path": ident.get("path"), "sha256": ident.get("sha256"),
                "config": ident.get("config"), "threshold": self.threshold, "min_area": self.min_area,
                "masks": PREDICTED}

    def provenance(self) -> dict:
        d = super().provenance()
        d["model"] = self.segmenter().identity
        d["classes"] = list(self.segmenter().classes)
        d["labels"] = PREDICTED
        d["images"] = self.images.provenance()
        return d
