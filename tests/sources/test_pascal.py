"""Pascal (VOC 2010 + Pascal-Context + Pascal-Part) and DTD sources: real files, generated
files in the real formats, and an end-to-end `broden build` from a local HTTP server.

Oracles are independent of the code under test: hand-derived part names, a second
reading of the .mat files (scipy's squeeze_me/struct_as_record=False path) painted with
plain loops, counts computed by hand from the real DTD label file.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from broden_builder.sources import BadSourceItem, SourceMissingError, get_source_class
from broden_builder.sources.dtd.source import DtdSource, parse_joint_labels
from broden_builder.sources.pascal.partnames import Part2IndError, load_part2ind, parse_part2ind, readable_part_name
from broden_builder.sources.pascal.source import PascalSource, parse_context_labels
from http_server import http_server  # noqa: F401  (fixture)
from test_dtd import DTD_LINES, jpeg_bytes, make_dtd

from conftest import REALDATA  # noqa: E402


def need_real() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real source files not available: {REALDATA} is absent (they are never committed)")
    return REALDATA


# --------------------------------------------------------------------------- generators (real formats)


def write_context_mat(path: Path, label_map: np.ndarray) -> None:
    """Pascal-Context format: variable LabelMap, uint16 H x W."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(str(path), {"LabelMap": np.asarray(label_map, dtype=np.uint16)})


def write_part_mat(path: Path, imname: str, objects) -> None:
    """Pascal-Part format: struct anno{imname, objects(1 x N){class, class_ind, mask, parts(1 x M){part_name, mask}}}.

    ``objects`` = [(class, class_ind, object mask, [(part_name, mask), ...]), ...]; no parts gives [].
    """
    odt = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    pdt = [("part_name", "O"), ("mask", "O")]
    objs = np.zeros((1, len(objects)), dtype=odt)
    for i, (cls, ind, mask, parts) in enumerate(objects):
        if parts:
            parr = np.zeros((1, len(parts)), dtype=pdt)
            for j, (name, m) in enumerate(parts):
                parr[0, j]["part_name"] = name
                parr[0, j]["mask"] = np.asarray(m, dtype=np.uint8)
        else:
            parr = np.zeros((0, 0))
        objs[0, i]["class"] = cls
        objs[0, i]["class_ind"] = np.array([[ind]], dtype=np.uint8)
        objs[0, i]["mask"] = np.asarray(mask, dtype=np.uint8)
        objs[0, i]["parts"] = parr
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0]["imname"] = imname
    anno[0, 0]["objects"] = objs
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(str(path), {"anno": anno})


#: A part2ind.m in the real file's syntax (all 20 headers, a subset of the parts).
PART2IND = """\
function pimap = part2ind()
% Define the part index of each objects.
pimap = cell(20, 1);
for ii = 1:20
    pimap{ii} = containers.Map('KeyType','char','ValueType','int32');
end

% [aeroplane]
pimap{1}('body')        = 1;
pimap{1}('lwing')       = 3;                % left wing
for ii = 1:10
    pimap{1}(sprintf('engine_%d', ii)) = 10+ii; % multiple engines
end
% [bicycle]
% [bird]
% [boat]
% only has silhouette mask
% [bottle]
% [bus]
pimap{6}('frontside')   = 1;
pimap{6}('fliplate')    = 8;                % front license plate
% [car]
keySet = keys(pimap{6});
valueSet = values(pimap{6});
pimap{7} = containers.Map(keySet, valueSet);         % car has the same set of parts with bus
% [cat]
% [chair]
% [cow]
pimap{10}('head')       = 1;
pimap{10}('lhorn')      = 7;                % left horn
pimap{10}('lfuleg')     = 11;               % left front upper leg
% [diningtable]
% [dog]
% [horse]
keySet = keys(pimap{10});
valueSet = values(pimap{10});
pimap{13} = containers.Map(keySet, valueSet);
remove(pimap{13}, {'lhorn'});
pimap{13}('lfho') = 30;
% [motorbike]
% [person]
pimap{15}('head')       = 1;
pimap{15}('llleg')      = 19;               \t% left lower leg
pimap{15}('hair')       = 10;
% [pottedplant]
% [sheep]
% [sofa]
% [train]
% [tvmonitor]
pimap{20}('screen')     = 1;
"""
LABELS = {i: f"class{i}" for i in range(1, 460)}
LABELS.update({2: "aeroplane", 59: "dog", 285: "person", 431: "unknown", 459: "wool"})
LABELS_TXT = "".join(f"{i}: {n}\n" for i, n in sorted(LABELS.items()))


def make_pascal(root: Path, ids=("2008_000001", "2008_000002", "2008_000003"), context_only=(), part_only=(),
                size=(30, 40), seed=0) -> dict:
    """A Pascal folder laid out like the three extracted archives; returns the expected labels."""
    h, w = size
    img_dir = root / "VOCdevkit" / "VOC2010" / "JPEGImages"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text(LABELS_TXT)
    (root / "part2ind.m").write_text(PART2IND)
    expected = {}
    rng = np.random.default_rng(seed)
    for k, ident in enumerate(list(ids) + list(context_only) + list(part_only)):
        (img_dir / f"{ident}.jpg").write_bytes(jpeg_bytes(h, w, seed + k))
        lm = rng.choice([2, 59, 285, 431, 459], size=(h, w)).astype(np.uint16)
        exp_obj = np.vectorize(lambda v: "" if v == 431 else LABELS[int(v)])(lm)
        cow = np.zeros((h, w), bool)
        cow[2:20, 3:25] = True
        head = np.zeros((h, w), bool)
        head[2:8, 3:10] = True
        leg = np.zeros((h, w), bool)
        leg[12:20, 5:9] = True
        person = np.zeros((h, w), bool)
        person[5:25, 20:35] = True
        hair = np.zeros((h, w), bool)
        hair[5:9, 20:35] = True
        objects = [("cow", 10, cow, [("head", head), ("lfuleg", leg)]),
                   ("boat", 4, cow, []),
                   ("person", 15, person, [("hair", hair), ("llleg", person & ~hair)])]
        exp_part = np.full((h, w), "", dtype=object)
        exp_part[head] = "head"
        exp_part[leg] = "leg"
        exp_part[hair] = "hair"
        exp_part[person & ~hair] = "leg"
        if ident not in part_only:
            write_context_mat(root / "trainval" / f"{ident}.mat", lm)
        if ident not in context_only:
            write_part_mat(root / "Annotations_Part" / f"{ident}.mat", ident, objects)
        expected[ident] = {"object": None if ident in part_only else exp_obj,
                           "part": None if ident in context_only else exp_part}
    return expected


def names_of(layer: np.ndarray, vocab: dict) -> np.ndarray:
    out = np.full(layer.shape, "", dtype=object)
    for code in np.unique(layer):
        if code:
            out[layer == code] = vocab[int(code)][0]
    return out


# --------------------------------------------------------------------------- part names
def test_readable_part_names_hand_derived():
    assert readable_part_name("lwing", "left wing") == "wing"
    assert readable_part_name("llleg", "left lower leg") == "leg"
    assert readable_part_name("luleg", "left upper leg") == "leg"
    assert readable_part_name("engine_", "multiple engines") == "engine"
    assert readable_part_name("hfrontside", "head front side") == "head"
    assert readable_part_name("cfrontside_", "coach front side") == "coach"
    assert readable_part_name("frontside") == ""  # 'front side': nothing left, as in the original
    assert readable_part_name("roofside") == "roof"
    assert readable_part_name("lfho") == "hoof"
    assert readable_part_name("fliplate", "front license plate") == "license plate"
    assert readable_part_name("hair") == "hair"


def test_part2ind_real_file():
    real = need_real()
    t = load_part2ind(real / "pascal_part" / "part2ind.m")
    assert t.classes == ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                         "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                         "train", "tvmonitor")
    p = t.parts
    # key counts derived by hand from the file: aeroplane 5 + 10 engines + 10 wheels; bus 9 + 10 + 10 + 10 + 20;
    # train 6 + 7 families of 10; horse = cow (19) - 2 horns + 4 hooves; dog = cat (17) + muzzle
    assert {c: len(p[c]) for c in ("aeroplane", "bus", "car", "train", "horse", "dog", "cat", "person", "boat")} == \
        {"aeroplane": 25, "bus": 59, "car": 59, "train": 76, "horse": 21, "dog": 18, "cat": 17, "person": 24, "boat": 0}
    assert p["aeroplane"]["lwing"] == "wing" and p["aeroplane"]["engine_3"] == "engine"
    assert p["aeroplane"]["wheel_10"] == "wheel" and "wheel_11" not in p["aeroplane"]
    assert p["bus"]["window_20"] == "window" and "window_21" not in p["bus"]
    assert p["bus"]["frontside"] == "" and p["bus"]["roofside"] == "roof" and p["car"]["leftmirror"] == "mirror"
    assert p["car"]["bliplate"] == "license plate"
    assert p["train"]["hfrontside"] == "head" and p["train"]["cfrontside_4"] == "coach"
    assert p["train"]["croofside_2"] == "coach roof" and p["train"]["hroofside"] == "head roof"
    assert p["horse"]["lfho"] == "hoof" and "lhorn" not in p["horse"] and p["horse"]["muzzle"] == "muzzle"
    assert p["sheep"] == p["cow"] and p["cow"]["lhorn"] == "horn"
    assert "muzzle" in p["dog"] and "muzzle" not in p["cat"]
    assert p["person"]["llleg"] == p["person"]["ruleg"] == "leg" and p["person"]["lebrow"] == "eyebrow"
    assert p["bicycle"]["chainwheel"] == "chain wheel" and p["bicycle"]["fwheel"] == "wheel"
    assert p["cat"]["lfpa"] == "paw" and p["tvmonitor"] == {"screen": "screen"}
    names = t.part_names()
    assert "" not in names and len(names) == len(set(names))
    for n in names:  # no positional word survives
        assert not set(n.split()) & {"left", "right", "front", "back", "upper", "lower", "side"}, n


def test_part2ind_errors():
    with pytest.raises(Part2IndError, match="no '% \\[class\\]' headers"):
        parse_part2ind("function pimap = part2ind()\n", "x.m")
    bad = "% [a]\npimap{1}(sprintf('w_%d', ii)) = 10+ii;\n"
    with pytest.raises(Part2IndError, match="x.m:2: numbered part outside"):
        parse_part2ind(bad, "x.m")
    with pytest.raises(Part2IndError, match="x.m:2: unrecognised part assignment"):
        parse_part2ind("% [a]\npimap{1}(\"w\") = 3;\n", "x.m")


# --------------------------------------------------------------------------- real Pascal-Part files
#: The short names found in the four real files, mapped by hand (from part2ind.m's comments).
HAND_NAMES = {
    "head": "head", "lear": "ear", "rear": "ear", "leye": "eye", "reye": "eye", "lebrow": "eyebrow",
    "rebrow": "eyebrow", "mouth": "mouth", "hair": "hair", "nose": "nose", "torso": "torso", "neck": "neck",
    "llarm": "arm", "luarm": "arm", "rlarm": "arm", "ruarm": "arm", "lhand": "hand", "rhand": "hand",
    "llleg": "leg", "luleg": "leg", "rlleg": "leg", "ruleg": "leg", "muzzle": "muzzle", "tail": "tail",
    "lflleg": "leg", "lfuleg": "leg", "rflleg": "leg", "rfuleg": "leg", "lblleg": "leg", "lbuleg": "leg",
    "rblleg": "leg", "rbuleg": "leg", "lfho": "hoof", "lbho": "hoof", "lfleg": "leg", "rfleg": "leg",
    "lbleg": "leg", "rbleg": "leg", "lfpa": "paw", "rfpa": "paw", "lbpa": "paw", "rbpa": "paw",
}


def _reference_parts(mat: Path, shape) -> np.ndarray:
    """Slow reference: read with squeeze_me/struct_as_record=False, paint names in file order."""
    d = sio.loadmat(str(mat), squeeze_me=True, struct_as_record=False)
    objs = np.atleast_1d(d["anno"].objects)
    out = np.full(shape, "", dtype=object)
    for o in objs:
        for p in np.atleast_1d(o.parts):
            m = np.asarray(p.mask)
            for y in range(shape[0]):
                row = m[y]
                for x in np.nonzero(row)[0]:
                    out[y, x] = HAND_NAMES[str(p.part_name)]
    return out


def _pascal_from_real(tmp_path: Path) -> Path:
    real = need_real()
    root = tmp_path / "pascal"
    imgs = root / "VOCdevkit" / "VOC2010" / "JPEGImages"
    imgs.mkdir(parents=True)
    (root / "Annotations_Part").mkdir()
    for f in sorted((real / "pascal_part" / "JPEGImages").glob("*.jpg")):
        (imgs / f.name).write_bytes(f.read_bytes())
    for f in sorted((real / "pascal_part" / "Annotations_Part").glob("*.mat")):
        (root / "Annotations_Part" / f.name).write_bytes(f.read_bytes())
    (root / "part2ind.m").write_bytes((real / "pascal_part" / "part2ind.m").read_bytes())
    (root / "labels.txt").write_bytes((real / "pascal_context" / "labels.txt").read_bytes())
    return root


def test_real_pascal_part_files_against_reference(tmp_path):
    root = _pascal_from_real(tmp_path)
    real = need_real()
    # Context annotations for two of the four ids (generated, real format); the other two are Part-only
    rng = np.random.default_rng(1)
    shapes = {}
    for f in sorted((real / "pascal_part" / "JPEGImages").glob("*.jpg")):
        with Image.open(f) as im:
            shapes[f.stem] = (im.height, im.width)
    ctx = {}
    for ident in ("2008_000008", "2008_000019"):
        ctx[ident] = rng.integers(1, 460, size=shapes[ident]).astype(np.uint16)
        write_context_mat(root / "trainval" / f"{ident}.mat", ctx[ident])
    src = get_source_class("pascal")({"type": "pascal", "path": str(root)})
    src.check()
    recs = src.records()
    assert [r.basename for r in recs] == sorted(shapes)
    vocab = src.vocabulary()
    assert len(vocab["object"]) == 458 and 431 not in vocab["object"] and vocab["object"][459] == ("wool",)
    for rec in recs:
        res = src.resolve(rec)
        with Image.open(root / "VOCdevkit" / "VOC2010" / "JPEGImages" / f"{rec.basename}.jpg") as im:
            assert np.array_equal(res.image, np.asarray(im.convert("RGB")))
        ref = _reference_parts(root / "Annotations_Part" / f"{rec.basename}.mat", shapes[rec.basename])
        got = names_of(res.pixel["part"][0], vocab["part"])
        assert (got == ref).all(), rec.basename
        assert res.image_level == {}
        if rec.basename in ctx:
            lm = ctx[rec.basename]
            want = np.where(lm == 431, 0, lm)  # 'unknown' is unlabeled
            assert np.array_equal(res.pixel["object"][0], want)
        else:
            assert "object" not in res.pixel


def test_real_context_labels():
    real = need_real()
    names = parse_context_labels(real / "pascal_context" / "labels.txt")
    assert len(names) == 459 and names[1] == "accordion" and names[2] == "aeroplane"
    assert names[431] == "unknown" and names[459] == "wool" and names[3] == "air conditioner"


def test_real_dtd_label_file():
    real = need_real()
    entries = parse_joint_labels(real / "dtd" / "labels_joint_anno.txt")
    assert len(entries) == 5640
    names = {n for _, labs in entries for n in labs}
    assert len(names) == 47 and {"banded", "zigzagged", "bubbly", "porous"} <= names
    # label-count histogram counted by hand (awk '{print NF-1}' | sort | uniq -c)
    hist = {}
    for _, labs in entries:
        hist[len(labs)] = hist.get(len(labs), 0) + 1
    assert hist == {1: 4746, 2: 822, 3: 67, 4: 5}
    d = dict(entries)
    assert d["bubbly/bubbly_0046.jpg"] == ("blotchy", "bubbly", "crystalline", "porous")
    assert all(rel.split("/")[1].startswith(rel.split("/")[0] + "_") for rel, _ in entries)


# --------------------------------------------------------------------------- generated Pascal files
def test_generated_pascal_union_and_labels(tmp_path):
    exp = make_pascal(tmp_path / "p", ids=("2008_000001", "2008_000002"), context_only=("2009_000001",),
                      part_only=("2010_000001",))
    src = PascalSource({"type": "pascal", "path": str(tmp_path / "p")})
    src.check()
    recs = src.records()
    assert [(r.basename, r.meta["has"]) for r in recs] == [
        ("2008_000001", ("object", "part")), ("2008_000002", ("object", "part")),
        ("2009_000001", ("object",)), ("2010_000001", ("part",))]
    vocab = src.vocabulary()
    # one code per (object class, part name), in PART2IND's order (by hand): aeroplane body, wing, engine;
    # bus license plate (its 'frontside' has no name); car (copy of bus) license plate; cow head, horn,
    # leg; horse (copy of cow, less the horn, plus a hoof) head, leg, hoof; person head, leg, hair;
    # tvmonitor screen
    assert vocab["part"] == {1: ("body",), 2: ("wing",), 3: ("engine",), 4: ("license plate",), 5: ("license plate",),
                             6: ("head",), 7: ("horn",), 8: ("leg",), 9: ("head",), 10: ("leg",), 11: ("hoof",),
                             12: ("head",), 13: ("leg",), 14: ("hair",), 15: ("screen",)}
    for rec in recs:
        res = src.resolve(rec)
        for cat in ("object", "part"):
            if exp[rec.basename][cat] is None:
                assert cat not in res.pixel
            else:
                got = names_of(res.pixel[cat][0], vocab[cat])
                assert (got == exp[rec.basename][cat]).all(), (rec.basename, cat)


def test_categories_option_and_missing_parts(tmp_path):
    make_pascal(tmp_path / "p", ids=("2008_000001",))
    (tmp_path / "p" / "part2ind.m").unlink()
    src = PascalSource({"type": "pascal", "path": str(tmp_path / "p")})
    with pytest.raises(SourceMissingError, match="Pascal-Part"):
        src.check()
    only = PascalSource({"type": "pascal", "path": str(tmp_path / "p"), "categories": ["object"]})
    only.check()
    assert set(only.vocabulary()) == {"object"}
    assert [r.filename for r in only.resources()] == ["VOCtrainval_03-May-2010.tar", "pascal-context/trainval.tar.gz"]
    res = only.resolve(only.records()[0])
    assert set(res.pixel) == {"object"}
    with pytest.raises(ValueError, match="categories"):
        PascalSource({"type": "pascal", "path": "x", "categories": ["scene"]})


def test_original_layout_is_found(tmp_path):
    """The original build's layout: VOC2010/ at the top, context/ and part/ subfolders."""
    flat = tmp_path / "flat"
    make_pascal(flat, ids=("2008_000001",))
    orig = tmp_path / "orig"
    (orig / "VOC2010").mkdir(parents=True)
    (flat / "VOCdevkit" / "VOC2010" / "JPEGImages").rename(orig / "VOC2010" / "JPEGImages")
    (orig / "context").mkdir()
    (flat / "trainval").rename(orig / "context" / "trainval")
    (flat / "labels.txt").rename(orig / "context" / "labels.txt")
    (orig / "part").mkdir()
    (flat / "Annotations_Part").rename(orig / "part" / "Annotations_Part")
    (flat / "part2ind.m").rename(orig / "part" / "part2ind.m")
    src = PascalSource({"type": "pascal", "path": str(orig)})
    src.check()
    assert set(src.resolve(src.records()[0]).pixel) == {"object", "part"}


def _bad(src, rec, match):
    with pytest.raises(BadSourceItem, match=match):
        src.resolve(rec)


def test_bad_pascal_items_name_the_file(tmp_path):
    root = tmp_path / "p"
    make_pascal(root, ids=("a1", "a2", "a3", "a4", "a5", "a6", "a7"))
    jpgs = root / "VOCdevkit" / "VOC2010" / "JPEGImages"
    data = (jpgs / "a1.jpg").read_bytes()
    (jpgs / "a1.jpg").write_bytes(data[: len(data) // 3])  # truncated JPEG
    (root / "trainval" / "a2.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage" + bytes(200))  # unreadable .mat
    lm = np.full((30, 40), 5, np.uint16)
    lm[3, 4] = 460
    write_context_mat(root / "trainval" / "a3.mat", lm)  # label id out of range
    m = np.ones((30, 40), np.uint8)
    write_part_mat(root / "Annotations_Part" / "a4.mat", "a4", [("cow", 10, m, [("wingtip", m)])])  # unknown part
    (jpgs / "a5.jpg").unlink()  # annotation without its image
    write_context_mat(root / "trainval" / "a6.mat", np.ones((31, 40), np.uint16))  # wrong size
    write_part_mat(root / "Annotations_Part" / "a7.mat", "a7", [("zebra", 0, m, [("head", m)])])  # unknown class
    src = PascalSource({"type": "pascal", "path": str(root)})
    recs = {r.basename: r for r in src.records()}
    _bad(src, recs["a1"], r"a1\.jpg: cannot read image")
    _bad(src, recs["a2"], r"trainval/a2\.mat: unreadable \.mat file")
    _bad(src, recs["a3"], r"a3\.mat: LabelMap holds label id 460, outside the range 1\.\.459")
    _bad(src, recs["a4"], r"a4\.mat: unknown part name 'wingtip' for class 'cow'")
    _bad(src, recs["a5"], r"a5\.jpg: image is missing")
    _bad(src, recs["a6"], r"a6\.mat: LabelMap is 40x31, the image is 40x30")
    _bad(src, recs["a7"], r"a7\.mat: unknown object class 'zebra'")


def test_malformed_labels_txt(tmp_path):
    make_pascal(tmp_path / "p", ids=("a1",))
    (tmp_path / "p" / "labels.txt").write_text("1: a\n2 b\n")
    with pytest.raises(SourceMissingError, match=r"labels\.txt:2: expected 'N: name'"):
        PascalSource({"type": "pascal", "path": str(tmp_path / "p")}).check()


# --------------------------------------------------------------------------- end to end over HTTP
URLS = {
    "VOCtrainval_03-May-2010.tar": "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
    "pascal-context/trainval.tar.gz": "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
    "pascal-part/trainval.tar.gz": "https://roozbehm.info/pascal-parts/trainval.tar.gz",
    "dtd-r1.0.1.tar.gz": "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
}


def _tar(path: Path, members: dict, gz: bool) -> bytes:
    """A tar(.gz) of {arcname: bytes} (directories implied), written deterministically."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tf:
        dirs = set()
        for name in sorted(members):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d and d not in dirs and ".." not in d:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(ti)
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(members[name]), 0o644
            tf.addfile(ti, io.BytesIO(members[name]))
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _files(folder: Path, prefix: str = "") -> dict:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def serve_pascal_dtd(gen: Path, server_root: Path, out_dir: Path) -> dict:
    """Tar the folders made by make_pascal (gen/pascal) and make_dtd (gen/dtdsrc) like the real archives,
    put them under ``server_root`` in the mirror layout (host/path of URLS) and write one checksums
    file per source into ``out_dir``; returns {"tsv": {source: path}, "rows": {filename: (size, sha256)}}."""
    from urllib.parse import urlsplit

    pas = gen / "pascal"
    archives = {
        "VOCtrainval_03-May-2010.tar": (_files(pas / "VOCdevkit", "VOCdevkit/"), False),
        "pascal-context/trainval.tar.gz": ({**_files(pas / "trainval", "trainval/"),
                                            "labels.txt": (pas / "labels.txt").read_bytes()}, True),
        "pascal-part/trainval.tar.gz": ({**_files(pas / "Annotations_Part", "Annotations_Part/"),
                                         "part2ind.m": (pas / "part2ind.m").read_bytes(),
                                         "examples/README": b"example figures\n"}, True),
        "dtd-r1.0.1.tar.gz": (_files(gen / "dtdsrc" / "dtd", "dtd/"), True),
    }
    rows = {}
    for fname, (members, gz) in archives.items():
        u = urlsplit(URLS[fname])
        data = _tar(server_root / (u.netloc + u.path).lstrip("/"), members, gz)
        rows[fname] = (len(data), hashlib.sha256(data).hexdigest())
    tsv = {}
    for src, names in (("pascal", [n for n in URLS if not n.startswith("dtd")]), ("dtd", ["dtd-r1.0.1.tar.gz"])):
        p = out_dir / f"{src}.tsv"
        p.write_text("".join(f"{URLS[n]}\t{rows[n][0]}\t{rows[n][1]}\t{n}\n" for n in names))
        tsv[src] = p
    return {"tsv": tsv, "rows": rows}


@pytest.fixture
def served(tmp_path, http_server):  # noqa: F811
    """Archives laid out like the real ones, served under the mirror layout; a checksums file per source."""
    from urllib.parse import urlsplit

    gen = tmp_path / "gen"
    make_pascal(gen / "pascal", ids=[f"2008_{i:06d}" for i in range(1, 9)], size=(36, 48))
    make_dtd(gen / "dtdsrc")
    info = serve_pascal_dtd(gen, http_server.root, tmp_path)
    return {"server": http_server, "tsv": info["tsv"], "rows": info["rows"],
            "url_path": {n: urlsplit(u).netloc + urlsplit(u).path for n, u in URLS.items()}}


def _recipe(tmp_path: Path, extra: str = "") -> Path:
    r = tmp_path / "recipe.yaml"
    r.write_text(f"""name: e2e
size: 64
segmentation_size: 32
min_frequency: 1
min_coverage: 0.0
splits: {{train: 0.7, val: 0.3}}
color: true
sources:
  - {{type: dtd, path: {tmp_path / 'data' / 'dtd'}}}
  - {{type: pascal, path: {tmp_path / 'data' / 'pascal'}}}
{extra}""")
    return r


def _store_files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".staging" not in p.relative_to(out).parts}


class Killed(BaseException):
    """Stands for the build process being killed."""


def test_end_to_end_build_over_http(tmp_path, served, monkeypatch, capsys):
    from broden_builder.cli import main
    from broden_builder.store.reader import BrodenStore
    from broden_builder.store import writer as writer_mod

    monkeypatch.setattr(PascalSource, "checksums_file", str(served["tsv"]["pascal"]))
    monkeypatch.setattr(DtdSource, "checksums_file", str(served["tsv"]["dtd"]))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1500000000")
    monkeypatch.delenv("BRODEN_DOWNLOAD_DIR", raising=False)
    from broden_builder.download import transfer

    monkeypatch.setattr(transfer, "_sleep", lambda s: None)  # no retry backoff in tests
    srv = served["server"]
    voc_path = "/" + served["url_path"]["VOCtrainval_03-May-2010.tar"]
    cut = served["rows"]["VOCtrainval_03-May-2010.tar"][0] // 2
    srv.cut_after[voc_path] = [cut]  # the first transfer of the VOC tar breaks half-way
    # a known source whose files are absent (manual download): skipped under --allow-missing
    # (an unknown type is a recipe error, even with --allow-missing: tests/test_traps.py)
    recipe = _recipe(tmp_path, "  - {type: ade20k, path: nowhere}\n")
    out = tmp_path / "store"
    mirror = srv.base_url

    # 1) killed in pass 1 after 5 images, right after downloading and extracting everything
    calls = {"n": 0}
    real_resolve = PascalSource.resolve

    def dying_resolve(self, rec):
        calls["n"] += 1
        if calls["n"] > 5:
            raise Killed()
        return real_resolve(self, rec)

    monkeypatch.setattr(PascalSource, "resolve", dying_resolve)
    args = ["build", str(recipe), "--out", str(out), "--workers", "1", "-q", "--mirror", mirror, "--allow-missing"]
    with pytest.raises(Killed):
        main(args)
    reqs = srv.requests_for(voc_path)
    assert len(reqs) == 2 and reqs[0].range is None and reqs[1].range == f"bytes={cut}-", reqs  # resumed, not restarted
    assert (tmp_path / "data" / "pascal" / "VOCdevkit" / "VOC2010" / "JPEGImages" / "2008_000001.jpg").is_file()
    assert (tmp_path / "data" / "dtd" / "dtd" / "labels" / "labels_joint_anno.txt").is_file()
    assert not (out / "index.csv").exists()

    # 2) killed in pass 2 after 4 rows
    monkeypatch.setattr(PascalSource, "resolve", real_resolve)
    real_write_row = writer_mod.StoreWriter.write_row
    rows = {"n": 0}

    def dying_write_row(self, *a, **k):
        rows["n"] += 1
        if rows["n"] > 4:
            raise Killed()
        return real_write_row(self, *a, **k)

    monkeypatch.setattr(writer_mod.StoreWriter, "write_row", dying_write_row)
    with pytest.raises(Killed):
        main(args)
    assert not (out / "index.csv").exists()
    n_requests = len(srv.requests)

    # 3) resumed to completion
    monkeypatch.setattr(writer_mod.StoreWriter, "write_row", real_write_row)
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "missing sources (skipped): ade20k" in text
    assert len(srv.requests) == n_requests  # nothing downloaded again

    # a clean build elsewhere from the same files is byte-identical
    clean = tmp_path / "clean"
    assert main(["build", str(recipe), "--out", str(clean), "--workers", "1", "-q", "--no-download",
                 "--allow-missing"]) == 0
    a, b = _store_files(out), _store_files(clean)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []

    store = BrodenStore(out)
    images = sorted(r.image for r in store.rows)
    assert images == sorted([f"pascal/2008_{i:06d}.jpg" for i in range(1, 9)] +
                            [f"dtd/{Path(rel).stem}.jpg" for rel, _ in DTD_LINES])
    names = {lab.name for lab in store.labels}
    assert {"airplane", "dog", "person", "wool", "head", "leg", "hair", "banded", "dotted", "striped"} <= names
    assert "unknown" not in names


def test_wrong_checksum_keeps_nothing(tmp_path, served, monkeypatch, capsys):
    from broden_builder.cli import main

    bad = tmp_path / "bad.tsv"
    line = served["tsv"]["dtd"].read_text().split("\t")
    line[2] = "0" * 64
    bad.write_text("\t".join(line))
    monkeypatch.setattr(DtdSource, "checksums_file", str(bad))
    monkeypatch.delenv("BRODEN_DOWNLOAD_DIR", raising=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nsize: 32\nmin_frequency: 1\nsources:\n  - {{type: dtd, path: {tmp_path / 'data'}}}\n")
    rc = main(["build", str(recipe), "--out", str(tmp_path / "s"), "-q", "--mirror", served["server"].base_url])
    err = capsys.readouterr().err
    assert rc == 1 and "sha256" in err and "0" * 64 in err and "dtd-r1.0.1.tar.gz" in err
    left = [p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").rglob("*") if p.is_file()] \
        if (tmp_path / "data").exists() else []
    assert left == []  # neither the download (nor its .part) nor anything extracted
    assert not (tmp_path / "s" / "index.csv").exists()


def test_path_traversal_archive_is_refused(tmp_path, served, monkeypatch, capsys):
    from broden_builder.cli import main

    srv = served["server"]
    evil = _tar(srv.root / "evil" / "dtd-r1.0.1.tar.gz",
                {"dtd/labels/labels_joint_anno.txt": b"a/a_0001.jpg a \n", "../../escaped.txt": b"owned\n"}, True)
    tsv = tmp_path / "evil.tsv"
    tsv.write_text(f"{srv.base_url}/evil/dtd-r1.0.1.tar.gz\t{len(evil)}\t{hashlib.sha256(evil).hexdigest()}"
                   f"\tdtd-r1.0.1.tar.gz\n")
    monkeypatch.setattr(DtdSource, "checksums_file", str(tsv))
    monkeypatch.delenv("BRODEN_DOWNLOAD_DIR", raising=False)
    data = tmp_path / "a" / "b" / "data"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nsize: 32\nmin_frequency: 1\nsources:\n  - {{type: dtd, path: {data}}}\n")
    rc = main(["build", str(recipe), "--out", str(tmp_path / "s"), "-q", "--mirror", ""])
    err = capsys.readouterr().err
    assert rc == 1 and "../../escaped.txt" in err
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (data / "dtd").exists()


def test_build_skips_bad_items_and_strict_fails(tmp_path, capsys):
    from broden_builder.cli import main

    root = tmp_path / "data" / "pascal"
    make_pascal(root, ids=("a1", "a2", "a3", "a4"))
    jpg = root / "VOCdevkit" / "VOC2010" / "JPEGImages" / "a2.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])
    m = np.ones((30, 40), np.uint8)
    write_part_mat(root / "Annotations_Part" / "a3.mat", "a3", [("cow", 10, m, [("wingtip", m)])])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nsize: 32\nmin_frequency: 1\nmin_coverage: 0\n"
                      f"sources:\n  - {{type: pascal, path: {root}}}\n")
    rc = main(["build", str(recipe), "--out", str(tmp_path / "strict"), "-q", "--no-download", "--strict"])
    err = capsys.readouterr().err
    assert rc == 1 and "strict mode" in err and "a2.jpg" in err
    assert not (tmp_path / "strict" / "index.csv").exists()
    assert main(["build", str(recipe), "--out", str(tmp_path / "s"), "-q", "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "2 source images skipped" in out and "a2.jpg: cannot read image" in out
    assert "unknown part name 'wingtip'" in out
    from broden_builder.store.reader import BrodenStore

    assert sorted(r.image for r in BrodenStore(tmp_path / "s").rows) == ["pascal/a1.jpg", "pascal/a4.jpg"]


def test_unifier_tables_for_pascal_names():
    """Hand-checked merges: Pascal names keep their meaning next to ADE20K's synonym lists."""
    from broden_builder.unify import SourceLabel, unify

    labels = [
        SourceLabel("ade20k", "object", 1, ("bicycle, bike, wheel, cycle",), 50, 5.0),
        SourceLabel("ade20k", "object", 2, ("bus, autobus, coach, charabanc",), 40, 4.0),
        SourceLabel("ade20k", "object", 3, ("andiron, firedog, dog, dog-iron",), 12, 0.6),
        SourceLabel("ade20k", "object", 4, ("airplane, aeroplane, plane",), 30, 3.0),
        SourceLabel("ade20k", "object", 5, ("car, auto, automobile, machine, motorcar",), 60, 6.0),
        SourceLabel("pascal", "part", 1, ("wheel",), 20, 1.0),
        SourceLabel("pascal", "part", 2, ("coach",), 15, 1.0),
        SourceLabel("pascal", "object", 59, ("dog",), 11, 2.0),
        SourceLabel("pascal", "object", 2, ("aeroplane",), 25, 2.0),
        SourceLabel("pascal", "object", 200, ("machine",), 14, 1.0),
        SourceLabel("pascal", "part", 3, ("handle bar",), 12, 1.0),
        SourceLabel("pascal", "part", 4, ("handlebar",), 12, 1.0),
    ]
    # ADE20K's comma lists split as its source does; these are the curated tables' reviewed merges
    labels = [SourceLabel(sl.source, sl.category, sl.code, tuple(n.strip() for n in sl.names[0].split(",")),
                          sl.frequency, sl.coverage) for sl in labels]
    vocab = unify(labels, min_frequency=10, min_coverage=0.5, rule="curated")
    by_member = {m.key: g for g in vocab.labels for m in g.members}
    name = lambda s, c, k: by_member[(s, c, k)].name  # noqa: E731
    assert name("pascal", "part", 1) == "wheel" and by_member[("pascal", "part", 1)] is not by_member[("ade20k", "object", 1)]
    assert name("pascal", "part", 2) == "coach" and by_member[("pascal", "part", 2)] is not by_member[("ade20k", "object", 2)]
    assert name("pascal", "object", 59) == "dog" and name("ade20k", "object", 3) == "andiron"
    assert by_member[("pascal", "object", 2)] is by_member[("ade20k", "object", 4)]
    assert name("pascal", "object", 2) == "airplane"
    assert name("pascal", "object", 200) == "machine" and name("ade20k", "object", 5) == "car"
    assert by_member[("pascal", "part", 3)] is by_member[("pascal", "part", 4)]
    assert name("pascal", "part", 3) == "handlebar"
