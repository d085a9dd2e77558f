"""Download machinery: resumable verified transfers, retries, mirror, offline, safe extraction, registration."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from broden_builder.acquire import DownloadOptions, prepare_sources
from broden_builder.download import (ChecksumError, DownloadError, OfflineError, Resource, UnsafeArchiveError,
                                     extract_archive, fetch, fetch_many, load_checksums, mirror_url,
                                     offline_instructions)
from broden_builder.download import transfer
from broden_builder.download.registry import ChecksumsFileError, parse_checksums
from broden_builder.sources import ImageRecord, Resolved, Source, SourceMissingError, register_source
from broden_builder.sources.downloadable import DownloadableSource
from broden_builder.sources.manual import manual_instructions, require_manual
from http_server import http_server  # noqa: F401  (fixture)


def blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def sleeps(monkeypatch):
    """Record backoff sleeps instead of sleeping."""
    calls = []
    monkeypatch.setattr(transfer, "_sleep", calls.append)
    return calls


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("BRODEN_MIRROR", raising=False)
    monkeypatch.delenv("BRODEN_DOWNLOAD_DIR", raising=False)


# --------------------------------------------------------------------------- checksums files
def test_parse_checksums_rows_comments_and_header():
    text = ("# a comment\n\nurl\tsize\tsha256\tfilename\n"
            f"http://h/x/a.tar\t12\t{'AB' * 32}\ta.tar\n"
            "https://h/y/trainval.tar.gz\t\t\tcontext/trainval.tar.gz\n")
    rows = parse_checksums(text, "t.tsv")
    assert rows == [Resource("http://h/x/a.tar", "a.tar", 12, "ab" * 32),
                    Resource("https://h/y/trainval.tar.gz", "context/trainval.tar.gz", None, None)]
    assert rows[0].verified and not rows[1].verified
    assert Resource("http://h/p/q.zip").filename == "q.zip"


@pytest.mark.parametrize("row, words", [
    ("http://h/a\t12\tabc\ta", ["t.tsv:2", "sha256", "'abc'"]),
    ("http://h/a\tbig\t\ta", ["t.tsv:2", "size", "'big'"]),
    ("http://h/a\t\t\t../a", ["t.tsv:2", "unsafe", "'../a'"]),
    ("http://h/a\t\t\t/etc/a", ["t.tsv:2", "absolute"]),
    ("http://h/a\t\ta", ["t.tsv:2", "4 tab-separated", "got 3"]),
    ("h/a\t\t\ta", ["t.tsv:2", "not an absolute URL"]),
    ("http://h/b\t\t\tx", ["t.tsv:2", "'x'", "line 1"]),
])
def test_parse_checksums_errors_name_line_and_value(row, words):
    with pytest.raises(ChecksumsFileError) as ei:
        parse_checksums("http://h/x\t\t\tx\n" + row + "\n", "t.tsv")
    for w in words:
        assert w in str(ei.value)


# --------------------------------------------------------------------------- transfer
def test_interrupted_download_resumes_with_range(http_server, tmp_path, sleeps):
    data = blob(300_000, 1)
    (http_server.root / "a.bin").write_bytes(data)
    res = Resource(http_server.url("a.bin"), "a.bin", len(data), sha(data))
    http_server.cut_after["/a.bin"] = [100_000]
    dest = tmp_path / "dl"
    with pytest.raises(DownloadError, match="partial data kept"):
        fetch(res, dest, retries=0, progress=False)
    part = dest / "a.bin.part"
    assert part.read_bytes() == data[:100_000]
    assert not (dest / "a.bin").exists()
    out = fetch(res, dest, progress=False)
    assert out.read_bytes() == data and not part.exists()
    reqs = http_server.requests_for("a.bin")
    assert [r.range for r in reqs] == [None, "bytes=100000-"]
    assert [r.status for r in reqs] == [200, 206]


def test_cut_connection_is_retried_and_resumed_in_one_call(http_server, tmp_path, sleeps):
    data = blob(50_000, 2)
    (http_server.root / "b.bin").write_bytes(data)
    http_server.cut_after["/b.bin"] = [7_000, 20_000]
    out = fetch(Resource(http_server.url("b.bin"), size=len(data), sha256=sha(data)), tmp_path, progress=False)
    assert out.read_bytes() == data
    assert [r.range for r in http_server.requests_for("b.bin")] == [None, "bytes=7000-", "bytes=27000-"]
    assert len(sleeps) == 2


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    data = blob(40_000, 3)
    (http_server.root / "c.bin").write_bytes(data)
    (tmp_path / "c.bin.part").write_bytes(b"garbage-that-is-not-a-prefix")
    http_server.ignore_range = True
    out = fetch(Resource(http_server.url("c.bin"), size=len(data), sha256=sha(data)), tmp_path, progress=False)
    assert out.read_bytes() == data


def test_wrong_checksum_clear_error_and_nothing_kept(http_server, tmp_path):
    data = blob(10_000, 4)
    (http_server.root / "d.tar").write_bytes(data)
    wrong = sha(b"something else")
    url = http_server.url("d.tar")
    dest = tmp_path / "dl"
    with pytest.raises(ChecksumError) as ei:
        fetch(Resource(url, "d.tar", len(data), wrong), dest, progress=False)
    msg = str(ei.value)
    for part in (url, "d.tar", wrong, sha(data), "sha256"):
        assert part in msg
    assert list(dest.iterdir()) == []
    with pytest.raises(ChecksumError) as ei:
        fetch(Resource(url, "d.tar", len(data) + 1, None), dest, progress=False)
    assert f"{len(data) + 1} bytes" in str(ei.value) and f"{len(data)} bytes" in str(ei.value)
    assert list(dest.iterdir()) == []


def test_existing_bad_file_is_replaced_and_good_file_reused(http_server, tmp_path):
    data = blob(5_000, 5)
    (http_server.root / "e.bin").write_bytes(data)
    res = Resource(http_server.url("e.bin"), size=len(data), sha256=sha(data))
    (tmp_path / "e.bin").write_bytes(b"x" * len(data))
    assert fetch(res, tmp_path, progress=False).read_bytes() == data
    n = len(http_server.requests)
    assert fetch(res, tmp_path, progress=False).read_bytes() == data
    assert len(http_server.requests) == n  # verified local copy, no request


def test_retries_with_exponential_backoff(http_server, tmp_path, sleeps):
    data = blob(3_000, 6)
    (http_server.root / "f.bin").write_bytes(data)
    http_server.fail["/f.bin"] = [500, 503, 500]
    out = fetch(Resource(http_server.url("f.bin"), size=len(data), sha256=sha(data)), tmp_path,
                retries=5, backoff=0.5, progress=False)
    assert out.read_bytes() == data
    assert sleeps == [0.5, 1.0, 2.0]
    assert [r.status for r in http_server.requests_for("f.bin")] == [500, 503, 500, 200]


def test_retries_are_bounded_and_capped(http_server, tmp_path, sleeps):
    (http_server.root / "g.bin").write_bytes(b"x")
    http_server.fail["/g.bin"] = [500] * 10
    with pytest.raises(DownloadError, match="after 4 failed attempt"):
        fetch(Resource(http_server.url("g.bin")), tmp_path, retries=3, backoff=1, max_backoff=3, progress=False)
    assert sleeps == [1, 2, 3]
    assert len(http_server.requests_for("g.bin")) == 4


def test_404_fails_at_once(http_server, tmp_path, sleeps):
    with pytest.raises(DownloadError, match="HTTP 404") as ei:
        fetch(Resource(http_server.url("nope.bin")), tmp_path, progress=False)
    assert "nope.bin" in str(ei.value)
    assert sleeps == [] and len(http_server.requests) == 1


def test_unresolvable_host_fails_at_once_with_offline_instructions(tmp_path, sleeps):
    """A name that does not resolve (RFC 6761: .invalid never does) is no flaky server: no retries,
    no sleeps, an OfflineError saying which file to put where (issue 24: 93 s for 3 files)."""
    import time

    data_url = "http://nonexistent.invalid/data/c.tar"
    t0 = time.monotonic()
    with pytest.raises(OfflineError) as ei:
        fetch(Resource(data_url, "c.tar", 10, "ab" * 32), tmp_path / "dl", retries=5, progress=False)
    assert sleeps == [] and time.monotonic() - t0 < 30
    msg = str(ei.value)
    assert "'nonexistent.invalid' does not resolve" in msg and "no retries" in msg
    assert f"destination: {(tmp_path / 'dl' / 'c.tar').resolve()}" in msg and f"url:         {data_url}" in msg
    assert not (tmp_path / "dl" / "c.tar.part").exists()
    # many files (OpenSurfaces photos): the first unresolved host stops the lot
    res = [Resource(f"http://nonexistent.invalid/p{i}.jpg", f"p{i}.jpg") for i in range(50)]
    with pytest.raises(OfflineError):
        fetch_many(res, tmp_path / "many", workers=2, progress=False)


def test_partial_data_is_mentioned_only_when_kept(http_server, tmp_path, sleeps):
    (http_server.root / "h.bin").write_bytes(blob(50_000, 3))
    http_server.fail["/h.bin"] = [500]
    with pytest.raises(DownloadError) as ei:
        fetch(Resource(http_server.url("h.bin")), tmp_path, retries=0, progress=False)
    assert "partial data kept" not in str(ei.value) and "nothing was received" in str(ei.value)
    http_server.cut_after["/h.bin"] = [20_000]
    with pytest.raises(DownloadError, match=r"partial data kept in .*h\.bin\.part: 20000 bytes"):
        fetch(Resource(http_server.url("h.bin")), tmp_path, retries=0, progress=False)


def test_mirror_rule_and_env(http_server, tmp_path, monkeypatch):
    assert mirror_url("https://example.org:8443/a/b/c.tar?x=1", "http://m.net/root/") == \
        "http://m.net/root/example.org:8443/a/b/c.tar"
    assert mirror_url("https://example.org/a.tar", None) == "https://example.org/a.tar"
    data = blob(2_000, 7)
    f = http_server.root / "mirror" / "data.example.org" / "pub" / "h.tar"
    f.parent.mkdir(parents=True)
    f.write_bytes(data)
    res = Resource("https://data.example.org/pub/h.tar?download=1", size=len(data), sha256=sha(data))
    assert fetch(res, tmp_path / "a", mirror=http_server.url("mirror"), progress=False).read_bytes() == data
    monkeypatch.setenv("BRODEN_MIRROR", http_server.url("mirror") + "/")
    assert fetch(res, tmp_path / "b", progress=False).read_bytes() == data
    assert [r.path for r in http_server.requests] == ["/mirror/data.example.org/pub/h.tar"] * 2
    # a local folder works as a mirror too
    assert fetch(res, tmp_path / "c", mirror=str(http_server.root / "mirror"), progress=False).read_bytes() == data


def test_offline_never_touches_network_and_says_what_to_put_where(http_server, tmp_path):
    data = blob(1_234, 8)
    (http_server.root / "i.tar.gz").write_bytes(data)
    url = http_server.url("i.tar.gz")
    res = Resource(url, "sub/i.tar.gz", len(data), sha(data))
    dest = tmp_path / "downloads"
    with pytest.raises(OfflineError) as ei:
        fetch(res, dest, offline=True)
    msg = str(ei.value)
    for part in (url, "sub/i.tar.gz", str((dest / "sub" / "i.tar.gz").resolve()), "1234 bytes", sha(data)):
        assert part in msg
    assert http_server.requests == []
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "i.tar.gz").write_bytes(data)
    assert fetch(res, dest, offline=True).read_bytes() == data
    assert http_server.requests == []
    text = offline_instructions([Resource("http://h/x.zip")], tmp_path)
    assert "size:        unknown" in text and "sha256:      unknown" in text


def test_fetch_many_bounded_concurrency_and_failures(http_server, tmp_path, sleeps):
    files = {f"photos/{i:03d}.jpg": blob(500 + i, 100 + i) for i in range(24)}
    for name, data in files.items():
        (http_server.root / name).parent.mkdir(exist_ok=True)
        (http_server.root / name).write_bytes(data)
    http_server.server.delay = 0.02
    res = [Resource(http_server.url(n), n, len(d), sha(d)) for n, d in files.items()]
    res.insert(5, Resource(http_server.url("photos/missing.jpg"), "photos/missing.jpg"))
    done = []
    report = fetch_many(res, tmp_path, workers=3, progress=False, on_done=lambda r, p, e: done.append(r.filename))
    assert [(r.filename, "HTTP 404" in e) for r, e in report.failed] == [("photos/missing.jpg", True)]
    assert [p.relative_to(tmp_path).as_posix() for p in report.ok] == list(files)
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
    assert sorted(done) == sorted(r.filename for r in res)
    assert 1 < http_server.server.max_active <= 3
    assert "1 failed" in report.summary() and "missing.jpg" in report.summary()


# --------------------------------------------------------------------------- extraction
def _tar(path: Path, members, mode="w:gz"):
    """members: list of (TarInfo kwargs, bytes or None)."""
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            ti = tarfile.TarInfo(info.pop("name"))
            for k, v in info.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return path


@pytest.mark.parametrize("bad", [
    ({"name": "ok/../../evil.txt"}, b"pwn"),
    ({"name": "/abs/evil.txt"}, b"pwn"),
    ({"name": "ok/link", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, None),
    ({"name": "ok/link", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None),
    ({"name": "ok/hard", "type": tarfile.LNKTYPE, "linkname": "../outside"}, None),
    ({"name": "ok/dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None),
])
def test_tar_escaping_member_refused(tmp_path, bad):
    name = bad[0]["name"]
    arc = _tar(tmp_path / "bad.tar.gz", [({"name": "ok/a.txt"}, b"fine"), (dict(bad[0]), bad[1])])
    target = tmp_path / "a" / "b" / "target"
    with pytest.raises(UnsafeArchiveError) as ei:
        extract_archive(arc, target, progress=False)
    assert name in str(ei.value) and "bad.tar.gz" in str(ei.value)
    assert sorted(p.name for p in target.iterdir()) == []  # not even the good member, no marker
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def _zip(path: Path, entries):
    """entries: list of (name, bytes, unix mode or None)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name)
            if mode is not None:
                zi.create_system = 3
                zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return path


@pytest.mark.parametrize("entry", [
    ("ok/../../evil.txt", b"pwn", None),
    ("/abs/evil.txt", b"pwn", None),
    ("C:/evil.txt", b"pwn", None),
    ("ok/link", b"../../outside", stat.S_IFLNK | 0o777),
])
def test_zip_escaping_member_refused(tmp_path, entry):
    arc = _zip(tmp_path / "bad.zip", [("ok/a.txt", b"fine", None), entry])
    target = tmp_path / "t"
    with pytest.raises(UnsafeArchiveError) as ei:
        extract_archive(arc, target, progress=False)
    assert entry[0] in str(ei.value) and "bad.zip" in str(ei.value)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_chain_escape_refused(tmp_path):
    # each link looks harmless on its own; following both leads out of the folder
    arc = _zip(tmp_path / "chain.zip", [
        ("d/up", b"..", stat.S_IFLNK | 0o777),
        ("d/up/up2", b"..", stat.S_IFLNK | 0o777),
        ("d/up/up2/evil.txt", b"pwn", None),
    ])
    target = tmp_path / "t"
    with pytest.raises(UnsafeArchiveError):
        extract_archive(arc, target, progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (target / "evil.txt").exists()


def test_tar_symlink_chain_escape_refused(tmp_path):
    arc = _tar(tmp_path / "chain.tar", [
        ({"name": "d/up", "type": tarfile.SYMTYPE, "linkname": ".."}, None),
        ({"name": "d/up/up2", "type": tarfile.SYMTYPE, "linkname": ".."}, None),
        ({"name": "d/up/up2/evil.txt"}, b"pwn"),
    ], "w")
    target = tmp_path / "t"
    with pytest.raises(UnsafeArchiveError) as ei:
        extract_archive(arc, target, progress=False)
    assert "d/up/up2" in str(ei.value)
    assert list(target.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_extraction_side_by_side_resumable(tmp_path):
    a = _tar(tmp_path / "a.tar.gz", [({"name": "VOCdevkit/VOC2010/JPEGImages/1.jpg"}, b"one"),
                                     ({"name": "VOCdevkit/VOC2010/JPEGImages/2.jpg"}, b"two"),
                                     ({"name": "VOCdevkit/link.jpg", "type": tarfile.SYMTYPE,
                                       "linkname": "VOC2010/JPEGImages/1.jpg"}, None)])
    b = _tar(tmp_path / "b.tar", [({"name": "trainval/x.mat"}, b"mat"), ({"name": "labels.txt"}, b"1: a\n")], "w")
    c = _zip(tmp_path / "c.zip", [("VOCdevkit/extra.txt", b"zip", None)])
    target = tmp_path / "pascal"
    for arc in (a, b, c):
        extract_archive(arc, target, progress=False)
    files = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*")
             if p.is_file() and ".extracted" not in p.parts}
    assert files == {"VOCdevkit/VOC2010/JPEGImages/1.jpg": b"one", "VOCdevkit/VOC2010/JPEGImages/2.jpg": b"two",
                     "VOCdevkit/link.jpg": b"one", "trainval/x.mat": b"mat", "labels.txt": b"1: a\n",
                     "VOCdevkit/extra.txt": b"zip"}
    assert os.readlink(target / "VOCdevkit" / "link.jpg") == "VOC2010/JPEGImages/1.jpg"
    assert sorted(p.name for p in (target / ".extracted").iterdir()) == ["a.tar.gz.json", "b.tar.json", "c.zip.json"]
    # a completed extraction is not redone
    (target / "labels.txt").unlink()
    extract_archive(b, target, progress=False)
    assert not (target / "labels.txt").exists()
    # an interrupted one (no marker, stale temp folder) is redone from scratch
    (target / ".extracted" / "b.tar.json").unlink()
    stale = target / ".extracting-b.tar"
    stale.mkdir()
    (stale / "junk").write_bytes(b"half")
    extract_archive(b, target, progress=False)
    assert (target / "labels.txt").read_bytes() == b"1: a\n"
    assert not stale.exists() and not (target / "junk").exists()


# --------------------------------------------------------------------------- manual sources
def test_manual_instructions(tmp_path):
    text = manual_instructions("ADE20K 2016", "https://ade.example/", ["ADE20K_2016_07_26/index_ade20k.mat"],
                               tmp_path, archive="ADE20K_2016_07_26.zip")
    assert "https://ade.example/" in text and "ADE20K_2016_07_26.zip" in text
    assert str(tmp_path.resolve() / "ADE20K_2016_07_26" / "index_ade20k.mat") in text
    with pytest.raises(SourceMissingError, match="missing under"):
        require_manual("ADE20K", "https://ade.example/", ["a/b.mat"], tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.mat").write_bytes(b"")
    assert require_manual("ADE20K", "https://ade.example/", ["a/b.mat"], tmp_path) == tmp_path


# --------------------------------------------------------------------------- a downloadable toy source
@register_source("toydl")
class ToyDownloadSource(DownloadableSource, Source):
    """Images ``toy/N.png`` with object mask = pixels brighter than 127, from one archive."""

    checksums_file = "unset"

    def check(self):
        if not (self.source_path() / "toy" / "labels.txt").exists():
            raise SourceMissingError(f"toy labels missing under {self.source_path()}")

    def vocabulary(self):
        return {"object": {1: ("bright",)}}

    def records(self):
        return [ImageRecord(p.stem, {"file": str(p)}) for p in sorted((self.source_path() / "toy").glob("*.png"))]

    def resolve(self, record):
        img = np.asarray(Image.open(record.meta["file"]).convert("RGB"))
        return Resolved(image=img, pixel={"object": [(img[..., 0] > 127).astype(np.int32)]})


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def toy(http_server, tmp_path, monkeypatch):
    """Serve toy.tar.gz; a checksums.tsv with its real size/sha256; a recipe pointing at an empty folder."""
    rng = np.random.default_rng(0)
    members = [({"name": "toy/labels.txt"}, b"1: bright\n")]
    for i in range(4):
        members.append(({"name": f"toy/{i}.png"}, _png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))))
    arc = _tar(http_server.root / "toy.tar.gz", members)
    data = arc.read_bytes()
    sums = tmp_path / "checksums.tsv"
    sums.write_text(f"# toy\n{http_server.url('toy.tar.gz')}\t{len(data)}\t{sha(data)}\ttoy.tar.gz\n")
    monkeypatch.setattr(ToyDownloadSource, "checksums_file", str(sums))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: toy\nsize: 16\nsegmentation_size: 8\nmin_frequency: 1\nmin_coverage: 0\ncolor: false\n"
                      f"sources:\n  - {{type: toydl, path: {tmp_path / 'toysrc'}}}\n")
    return {"data": data, "sums": sums, "recipe": recipe, "path": tmp_path / "toysrc"}


def test_build_downloads_missing_source(toy, tmp_path, http_server):
    from broden_builder.cli import main

    out = tmp_path / "store"
    assert main(["build", str(toy["recipe"]), "--out", str(out), "-q"]) == 0
    assert (out / "index.csv").exists()
    assert (toy["path"] / ".downloads" / "toy.tar.gz").read_bytes() == toy["data"]
    assert (toy["path"] / "toy" / "labels.txt").read_bytes() == b"1: bright\n"
    assert len(list((out / "images").rglob("*.jpg"))) == 4
    # present now: a second download call fetches nothing
    n = len(http_server.requests)
    assert main(["download", str(toy["recipe"]), "-q"]) == 0
    assert main(["download", str(toy["recipe"]), "-q", "--only", "nosuchsource"]) == 2
    assert len(http_server.requests) == n


def test_build_offline_and_no_download(toy, tmp_path, http_server, capsys):
    from broden_builder.cli import main

    assert main(["build", str(toy["recipe"]), "--out", str(tmp_path / "s"), "-q", "--offline"]) == 1
    err = capsys.readouterr().err
    assert http_server.url("toy.tar.gz") in err and sha(toy["data"]) in err
    assert str((toy["path"] / ".downloads" / "toy.tar.gz").resolve()) in err
    assert main(["build", str(toy["recipe"]), "--out", str(tmp_path / "s"), "-q", "--no-download"]) == 1
    assert "missing sources" in capsys.readouterr().err
    assert http_server.requests == []


def test_build_wrong_checksum_reports_source(toy, tmp_path):
    from broden_builder.build import instantiate_sources
    from broden_builder.recipe import load_recipe

    toy["sums"].write_text(f"{toy['sums'].read_text().split(chr(9))[0]}\t{len(toy['data'])}\t{'0' * 64}\ttoy.tar.gz\n")
    srcs = instantiate_sources(load_recipe(toy["recipe"]))
    with pytest.raises(DownloadError) as ei:
        prepare_sources(srcs, DownloadOptions(progress=False))
    assert "source toydl" in str(ei.value) and "0" * 64 in str(ei.value)
    assert not (toy["path"] / ".downloads" / "toy.tar.gz").exists()
    assert not (toy["path"] / "toy").exists()
    assert prepare_sources(srcs, DownloadOptions(progress=False), allow_missing=True) == {"toydl": "failed"}


def test_checksums_register_writes_size_and_sha256(toy, tmp_path, http_server):
    from broden_builder.cli import main

    toy["sums"].write_text(f"# toy source\n# url\tsize\tsha256\tfilename\n"
                           f"{http_server.url('toy.tar.gz')}\t\t\ttoy.tar.gz\n")
    assert main(["checksums", "--register", "toydl", "-q"]) == 0
    rows = load_checksums(toy["sums"])
    oracle = hashlib.sha256((http_server.root / "toy.tar.gz").read_bytes()).hexdigest()
    assert rows == [Resource(http_server.url("toy.tar.gz"), "toy.tar.gz",
                             (http_server.root / "toy.tar.gz").stat().st_size, oracle)]
    assert toy["sums"].read_text().startswith("# toy source\n# url\tsize\tsha256\tfilename\n")
    # from a local folder, without the network
    other = tmp_path / "local"
    other.mkdir()
    (other / "toy.tar.gz").write_bytes(toy["data"])
    toy["sums"].write_text(f"{http_server.url('toy.tar.gz')}\t\t\ttoy.tar.gz\n")
    n = len(http_server.requests)
    assert main(["checksums", "--register", "toydl", "--from", str(other), "-q"]) == 0
    assert len(http_server.requests) == n
    assert load_checksums(toy["sums"])[0].sha256 == oracle


def test_register_checks_a_published_sha256(toy, tmp_path, http_server):
    from broden_builder.cli import main

    other = tmp_path / "local"
    other.mkdir()
    (other / "toy.tar.gz").write_bytes(toy["data"])
    published = f"{http_server.url('toy.tar.gz')}\t\t{'1' * 64}\ttoy.tar.gz\n"
    toy["sums"].write_text(published)
    assert main(["checksums", "--register", "toydl", "--from", str(other), "-q"]) == 1
    assert toy["sums"].read_text() == published
    toy["sums"].write_text(published.replace("1" * 64, sha(toy["data"])))
    assert main(["checksums", "--register", "toydl", "--from", str(other), "-q"]) == 0
    assert load_checksums(toy["sums"])[0].size == len(toy["data"])


def test_same_archive_name_in_two_folders(toy, tmp_path, http_server):
    from broden_builder.build import instantiate_sources
    from broden_builder.recipe import load_recipe

    for sub, content in (("ctx", b"context"), ("part", b"part")):
        (http_server.root / sub).mkdir()
        _tar(http_server.root / sub / "trainval.tar.gz", [({"name": f"{sub}/labels.txt"}, content)])
    toy["sums"].write_text("".join(f"{http_server.url(f'{s}/trainval.tar.gz')}\t\t\t{s}/trainval.tar.gz\n"
                                   for s in ("ctx", "part")))
    src = instantiate_sources(load_recipe(toy["recipe"]))[0]
    src.extract_all(src.fetch_all(progress=False), progress=False)
    assert (toy["path"] / "ctx" / "labels.txt").read_bytes() == b"context"
    assert (toy["path"] / "part" / "labels.txt").read_bytes() == b"part"
    assert sorted(p.name for p in (toy["path"] / ".extracted").iterdir()) == [
        "ctx__trainval.tar.gz.json", "part__trainval.tar.gz.json"]
    # each marker records its own archive: a second run extracts neither again (a shared marker
    # named 'trainval.tar.gz.json' would hold only the last archive's sha256 and redo the other)
    for s in ("ctx", "part"):
        (toy["path"] / s / "labels.txt").unlink()
    src.extract_all(progress=False)
    assert not (toy["path"] / "ctx" / "labels.txt").exists() and not (toy["path"] / "part" / "labels.txt").exists()
    assert not list(toy["path"].glob(".extracting-*"))
    # the marker is keyed by the resource filename, so a changed archive in one folder is redone alone
    _tar(http_server.root / "ctx" / "trainval.tar.gz", [({"name": "ctx/labels.txt"}, b"context v2")])
    src.extract_all([http_server.root / "ctx" / "trainval.tar.gz", toy["path"] / ".downloads" / "part" / "trainval.tar.gz"],
                    progress=False)
    assert (toy["path"] / "ctx" / "labels.txt").read_bytes() == b"context v2"
    assert not (toy["path"] / "part" / "labels.txt").exists()


def test_checksums_register_refuses_corrupt_archive(toy, tmp_path, http_server):
    from broden_builder.cli import main

    (http_server.root / "toy.tar.gz").write_bytes(toy["data"][: len(toy["data"]) // 2])
    before = f"{http_server.url('toy.tar.gz')}\t\t\ttoy.tar.gz\n"
    toy["sums"].write_text(before)
    assert main(["checksums", "--register", "toydl", "-q"]) == 1
    assert toy["sums"].read_text() == before
