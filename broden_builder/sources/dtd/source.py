"""The ``dtd`` source: the Describable Textures Dataset r1.0.1, texture labels per image.

Recipe entry: ``{type: dtd, path: DIR}`` where ``dtd-r1.0.1.tar.gz`` was extracted into
DIR, giving ``DIR/dtd/images/<cat>/<cat>_NNNN.jpg`` and
``DIR/dtd/labels/labels_joint_anno.txt``. DIR may also be the ``dtd`` folder itself (or
the original build's ``dtd-r1.0.1``).

``labels_joint_anno.txt`` has one line per image: ``<cat>/<file>.jpg lab1 lab2 ...``
(5,640 lines, 47 names). Every label of a line is kept (image-level ``texture``). The
vocabulary is the sorted set of names in the file, codes 1..N. Store names are
``dtd/<cat>_NNNN.jpg`` (the file name without its folder, as in the original build).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..downloadable import DownloadableSource
from .. import register_source
from ..base import BadSourceItem, ImageRecord, Resolved, Source, SourceMissingError
from ..common import load_rgb
from .schema import DtdEntry
from ..terms import folder_terms

HERE = Path(__file__).resolve().parent
LABEL_FILE = "labels/labels_joint_anno.txt"
_ROOTS = ("dtd", ".", "dtd-r1.0.1", "dtd-r1.0.1/dtd")

GET_FILES = """\
A build downloads missing sources itself (or run `broden download RECIPE --only dtd`;
--offline says which file to put where). By hand, get
  https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz
and extract it into {path} (giving {path}/dtd/images/ and {path}/dtd/labels/)."""


def parse_joint_labels(path: Path) -> list:
    """labels_joint_anno.txt -> [(relative image path, (label, ...)), ...] in file order.

    Malformed lines (no label, an unsafe path, a repeated image) raise SourceMissingError naming the line.
    """
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError as e:
        raise SourceMissingError(f"{path}: cannot read ({e})") from None
    out, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        rel, labels = fields[0], tuple(dict.fromkeys(fields[1:]))
        p = PurePosixPath(rel)
        if not labels:
            raise SourceMissingError(f"{path}:{lineno}: image {rel!r} has no label")
        if p.is_absolute() or ".." in p.parts or p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            raise SourceMissingError(f"{path}:{lineno}: {rel!r} is not a relative image path")
        if rel in seen:
            raise SourceMissingError(f"{path}:{lineno}: image {rel!r} already listed on line {seen[rel]}")
        seen[rel] = lineno
        out.append((rel, labels))
    if not out:
        raise SourceMissingError(f"{path}: no images listed")
    return out


@register_source("dtd")
class DtdSource(DownloadableSource, Source):
    """DTD r1.0.1 images with all their joint-annotation texture labels."""

    type_name = "dtd"
    config_schema = DtdEntry  # the recipe keys (schema.py)
    prefix = "dtd"
    #: Licence line and citation, read from this folder's LICENSE.md and CITATION.bib.
    license, citation = folder_terms(__file__)

    def __init__(self, config, image_size: int = 224, segmentation_size: int = 112):
        super().__init__(config, image_size, segmentation_size)
        if "path" not in self.config:
            raise ValueError("dtd source: 'path' (the folder dtd-r1.0.1.tar.gz extracts into) is required")
        self.root = Path(self.config["path"]).expanduser()
        self._entries = None

    def _locate(self) -> None:
        if self._entries is not None:
            return
        base = next((self.root / r for r in _ROOTS if (self.root / r / LABEL_FILE).is_file()), None)
        if base is None:
            raise SourceMissingError(f"no DTD label file ({LABEL_FILE}) under {self.root}.\n"
                                     + GET_FILES.format(path=self.root))
        if not (base / "images").is_dir():
            raise SourceMissingError(f"{base / 'images'} is missing.\n" + GET_FILES.format(path=self.root))
        self.base = base
        entries = parse_joint_labels(base / LABEL_FILE)
        names = sorted({n for _, labels in entries for n in labels})
        self.codes = {n: i + 1 for i, n in enumerate(names)}
        stems = {}
        for rel, _ in entries:
            stem = PurePosixPath(rel).stem
            if stem in stems:
                raise SourceMissingError(f"{base / LABEL_FILE}: {rel!r} and {stems[stem]!r} share the store name {stem!r}")
            stems[stem] = rel
        self._entries = entries

    def check(self) -> None:
        self._locate()

    def vocabulary(self) -> dict:
        self._locate()
        return {"texture": {c: (n,) for n, c in self.codes.items()}}

    def image_level_categories(self) -> frozenset:
        return frozenset({"texture"})

    def plan_statistics(self) -> dict:
        """{("texture", code): (images, coverage)} from the labels file alone (``broden build --plan``):
        images listing the label; an image-level label covers its whole image, so coverage = images,
        as the build counts it (broden_builder.store.statistics)."""
        self._locate()
        n: dict = {}
        for _rel, labels in self._entries:
            for name in labels:
                n[self.codes[name]] = n.get(self.codes[name], 0) + 1
        return {("texture", code): (c, float(c)) for code, c in n.items()}

    def records(self) -> list:
        self._locate()
        return [ImageRecord(PurePosixPath(rel).stem, {"path": rel, "codes": tuple(self.codes[n] for n in labels)})
                for rel, labels in self._entries]

    def resolve(self, record: ImageRecord) -> Resolved:
        self._locate()
        path = self.base / "images" / record.meta["path"]
        if not path.is_file():
            raise BadSourceItem(f"{path}: image is missing (listed in {LABEL_FILE})")
        rgb = load_rgb(path)
        return Resolved(image=rgb, image_level={"texture": list(record.meta["codes"])})

    def provenance(self) -> dict:
        d = super().provenance()
        self._locate()
        d.update({"version": "r1.0.1", "base": str(self.base), "label_file": LABEL_FILE,
                  "images": len(self._entries), "checksums": str(HERE / "checksums.tsv")})
        return d
