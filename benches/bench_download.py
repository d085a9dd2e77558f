"""Throughput of the download machinery against a local HTTP server (127.0.0.1).

Usage: python benches/bench_download.py [--mb 128] [--files 1000] [--file-kb 20] [--workers 8]

Measures: one large verified fetch (MB/s, including the sha256 pass), a fetch resumed
after a cut at half, many small files with fetch_many (files/s), and the safe extraction
of a tar.gz of those small files (files/s).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from http_server import LocalHTTPServer  # noqa: E402

from broden_builder.download import Resource, extract_archive, fetch, fetch_many  # noqa: E402
from broden_builder.download import transfer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=128)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--file-kb", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    a = ap.parse_args()
    transfer._sleep = lambda s: None
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        www = d / "www"
        (www / "photos").mkdir(parents=True)
        big = (bytes(range(256)) * 4096) * (a.mb * 1024 * 1024 // (256 * 4096))
        (www / "big.bin").write_bytes(big)
        small = []
        for i in range(a.files):
            data = (i.to_bytes(4, "little") * (a.file_kb * 256))
            (www / "photos" / f"{i:06d}.jpg").write_bytes(data)
            small.append((f"photos/{i:06d}.jpg", data))
        with LocalHTTPServer(www) as srv:
            res = Resource(srv.url("big.bin"), "big.bin", len(big), hashlib.sha256(big).hexdigest())
            t = time.perf_counter()
            fetch(res, d / "dl1", progress=False)
            dt = time.perf_counter() - t
            print(f"large fetch {a.mb} MiB (verified): {dt:.2f} s, {a.mb / dt:.0f} MiB/s")
            srv.cut_after["/big.bin"] = [len(big) // 2]
            t = time.perf_counter()
            fetch(res, d / "dl2", progress=False)
            dt = time.perf_counter() - t
            print(f"large fetch cut at half, resumed in the same call: {dt:.2f} s, {a.mb / dt:.0f} MiB/s")
            rs = [Resource(srv.url(n), n, len(b), hashlib.sha256(b).hexdigest()) for n, b in small]
            t = time.perf_counter()
            rep = fetch_many(rs, d / "dl3", workers=a.workers, progress=False)
            dt = time.perf_counter() - t
            assert not rep.failed, rep.summary()
            print(f"fetch_many {a.files} x {a.file_kb} KiB, {a.workers} workers: {dt:.2f} s, {a.files / dt:.0f} files/s")
        arc = d / "photos.tar.gz"
        with tarfile.open(arc, "w:gz", compresslevel=1) as tf:
            tf.add(d / "dl3" / "photos", arcname="photos")
        t = time.perf_counter()
        extract_archive(arc, d / "x", progress=False)
        dt = time.perf_counter() - t
        print(f"extract tar.gz of {a.files} files: {dt:.2f} s, {a.files / dt:.0f} files/s")


if __name__ == "__main__":
    main()
