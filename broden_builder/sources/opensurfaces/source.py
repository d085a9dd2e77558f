"""The ``opensurfaces`` source: OpenSurfaces materials (Bell et al. 2013), as Broden used them.

Recipe entry: ``{type: opensurfaces, path: DIR}`` with optional ``photos_url`` (static root the
photos are fetched from, default the original S3 bucket), ``download_workers`` (8) and
``download: false`` (never fetch). ``DIR`` holds the extracted ``opensurfaces-release-0.zip``
(its JSON tables at the top or under ``opensurfaces/``; fetched and extracted by the download
machinery from ``checksums.tsv``). Photos go to ``DIR/photos/<pk>.jpg``: before listing its
records the source fetches the missing ones one by one (bounded concurrency, resumable,
failures reported; each failed photo is later skipped as a BadSourceItem, or fails the
build with ``--strict``). Only the material category is used (the release's object and scene
labels were deliberately left out of Broden); labels are rendered from the shape polygons at
the release script's 1,024-pixel height and the photo's ``aspect_ratio``, not at the photo's
own resolution, as the original build used them (see :mod:`.release`).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Optional

from ..downloadable import DownloadableSource
from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceMissingError
from . import release as rel
from .schema import OpenSurfacesEntry
from ..terms import folder_terms

log = logging.getLogger(__name__)

STATIC_ROOT = "http://labelmaterial.s3.amazonaws.com"
SITE = "http://opensurfaces.cs.cornell.edu/"


class _NoChecksumNote(logging.Filter):
    """Drops the per-photo 'no sha256 recorded' warnings (photos have no published checksums)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "no sha256 recorded" not in record.getMessage()


@register_source("opensurfaces")
class OpenSurfacesSource(DownloadableSource, Source):
    """OpenSurfaces photos with material labels (substance per shape)."""

    type_name = "opensurfaces"
    config_schema = OpenSurfacesEntry  # the recipe keys (schema.py)
    prefix = "opensurfaces"
    checksums_file = "checksums.tsv"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        if "path" not in self.config:
            raise ValueError("opensurfaces: the recipe entry needs a 'path' (the folder holding the extracted release)")
        self.path = Path(self.config["path"]).expanduser()
        self.photos_url = str(self.config.get("photos_url", STATIC_ROOT)).rstrip("/")
        self.download_workers = int(self.config.get("download_workers", 8))
        self._tables = None
        self.failed: dict = {}  # photo pk -> download error

    # ------------------------------------------------------------------ files
    def check(self) -> None:
        if rel.release_dir(self.path) is None:
            raise SourceMissingError(
                f"OpenSurfaces release tables not found under {self.path} (expected {', '.join(rel.REQUIRED)} "
                f"there or in {self.path / 'opensurfaces'}). `broden download RECIPE` fetches "
                f"opensurfaces-release-0.zip (see {SITE}) and extracts it there.")

    def tables(self) -> dict:
        """Kept photos, kept shapes per photo (drawing order) and the substance numbering."""
        if self._tables is not None:
            return self._tables
        self.check()
        d = rel.release_dir(self.path)
        photos = rel.kept_photos(rel.load_fixture(d / "photos.photo.json"))
        substances = rel.load_fixture(d / "shapes.shapesubstance.json")
        reds = rel.substance_reds(substances)
        names = {s["pk"]: s["name"] for s in substances}
        by_red = {r: names[pk] for pk, r in reds.items()}
        csv_path = next((p for p in (d / "label-substance-colors.csv", self.path / "label-substance-colors.csv") if p.is_file()), None)
        if csv_path is not None:
            table = rel.read_substance_colors(csv_path)
            if table != by_red:
                log.warning("%s disagrees with the substances in the release JSON; the JSON numbering is used", csv_path)
        keep = {p["pk"] for p in photos}
        shapes: dict = {pk: [] for pk in keep}
        for s in rel.kept_shapes(rel.load_fixture(d / "shapes.materialshape.json")):
            if s.get("photo") in keep:
                shapes[s["photo"]].append({k: s.get(k) for k in ("substance", "vertices", "triangles", "pk")})
        self._tables = {"photos": photos, "shapes": shapes, "reds": reds, "names": by_red}
        return self._tables

    def photo_path(self, pk) -> Path:
        return self.path / "photos" / f"{pk}.jpg"

    def fetch_photos(self, progress: bool = True) -> None:
        """Fetch every kept photo not yet on disk (concurrency ``download_workers``); failures go to ``self.failed``."""
        from ...download.registry import Resource
        from ...download.transfer import fetch_many

        todo = []
        for p in self.tables()["photos"]:
            if not self.photo_path(p["pk"]).is_file() and p.get("image_orig"):
                todo.append(Resource(f"{self.photos_url}/{str(p['image_orig']).lstrip('/')}", filename=f"photos/{p['pk']}.jpg"))
        if not todo:
            return
        log.info("opensurfaces: fetching %d photo(s) from %s", len(todo), self.photos_url)
        tlog = logging.getLogger("broden_builder.download.transfer")
        filt = _NoChecksumNote()
        tlog.addFilter(filt)
        try:
            report = fetch_many(todo, self.path, workers=self.download_workers, progress=progress, retries=2,
                                backoff=0.5)
        finally:
            tlog.removeFilter(filt)
        for res, err in report.failed:
            self.failed[Path(res.filename).stem] = err
        if report.failed:
            log.warning("opensurfaces: %d of %d photo(s) failed to download (they will be skipped): %s",
                        len(report.failed), len(todo), report.summary().splitlines()[1].strip())

    # ------------------------------------------------------------------ Source API
    def vocabulary(self) -> dict:
        return {"material": {r: (n,) for r, n in self.tables()["names"].items()}}

    def split_names(self, category: str, name: str) -> tuple:
        """Substance names are '/' lists ('Carpet/rug' -> carpet, rug; 'Plastic - clear' -> plastic-clear)."""
        return rel.material_names(name)

    def image_level_categories(self) -> frozenset:
        return frozenset()

    def records(self) -> list:
        if self.download_allowed():
            self.fetch_photos(progress=not self.config.get("quiet", False))
        return [ImageRecord(str(p["pk"]), {"pk": p["pk"], "aspect_ratio": p.get("aspect_ratio")})
                for p in self.tables()["photos"]]

    def resolve(self, record: ImageRecord) -> Resolved:
        from ..decode import load_image

        pk = record.meta["pk"]
        path = self.photo_path(pk)
        if str(pk) in self.failed and not path.is_file():
            raise BadSourceItem(f"{path}: photo failed to download ({self.failed[str(pk)]})")
        if not path.is_file():
            raise BadSourceItem(f"{path}: photo not found (download disabled or not fetched yet)")
        rgb = load_image(path)
        try:
            w, h = rel.label_size(record.meta.get("aspect_ratio"))
        except (TypeError, ValueError) as e:
            raise BadSourceItem(f"photos.photo.json: photo {pk}: {e}") from None
        t = self.tables()
        try:
            material = rel.render_material(t["shapes"].get(pk, []), t["reds"], w, h)
        except (IndexError, ValueError) as e:
            raise BadSourceItem(f"{path}: a shape of photo {pk} has malformed vertices/triangles ({e})") from None
        # the label plane keeps the release script's size (1,024 high), not the photo's
        return Resolved(image=rgb, pixel={"material": [material.astype("int32")]},
                        own_resolution=frozenset({"material"}))

    def plan_statistics(self) -> Optional[dict]:
        """Images per substance from the shape table (photos with a kept shape of it); coverage unknown."""
        t = self.tables()
        n: Counter = Counter()
        for pk, shapes in t["shapes"].items():
            for red in {t["reds"].get(s["substance"], 0) for s in shapes} - {0}:
                n[red] += 1
        return {("material", r): (c, None) for r, c in n.items()}

    def provenance(self) -> dict:
        d = super().provenance()
        d.update({"version": "release-0", "path": str(self.path), "photos_url": self.photos_url,
                  "failed_downloads": len(self.failed)})
        return d
