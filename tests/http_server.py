"""A local HTTP server for download tests: serves a folder on 127.0.0.1 (random port).

Supports ``Range: bytes=N-`` / ``bytes=N-M`` (206 with Content-Range, 416 past the end),
records every request (path and Range header), and can misbehave on demand:

* ``server.cut_after[path] = [n, ...]``: the next requests for ``path`` announce the full
  Content-Length but send only ``n`` bytes of the body and close the connection;
* ``server.fail[path] = [500, 404, ...]``: the next requests for ``path`` get these statuses;
* ``server.ignore_range = True``: answer 200 with the whole file even to Range requests;
* ``server.delay = seconds``: hold each file response that long (``server.max_active``
  then tells how many requests were ever served at the same time).

Each list is consumed one entry per request. Use as a context manager or via the
``http_server`` fixture (import it into a test module: ``from http_server import http_server``).
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import unquote, urlsplit

import pytest


@dataclass
class Request:
    path: str
    range: Optional[str]
    status: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # quiet
        pass

    def _record(self, path: str, status: int) -> None:
        with self.server.lock:
            self.server.requests.append(Request(path, self.headers.get("Range"), status))

    def _pop(self, table: Dict[str, List], path: str):
        with self.server.lock:
            queue = table.get(path)
            if queue:
                return queue.pop(0)
        return None

    def _error(self, path: str, code: int) -> None:
        self._record(path, code)
        body = f"error {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self):  # noqa: N802
        with self.server.lock:
            self.server.active += 1
            self.server.max_active = max(self.server.max_active, self.server.active)
        try:
            if self.server.delay:
                time.sleep(self.server.delay)
            self._get()
        finally:
            with self.server.lock:
                self.server.active -= 1

    def _get(self):
        path = unquote(urlsplit(self.path).path)
        code = self._pop(self.server.fail, path)
        if code is not None:
            return self._error(path, code)
        root = self.server.root.resolve()
        f = (root / path.lstrip("/")).resolve()
        if root not in f.parents or not f.is_file():
            return self._error(path, 404)
        data = f.read_bytes()
        size = len(data)
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and not self.server.ignore_range:
            m = re.match(r"^bytes=(\d+)-(\d*)$", rng.strip())
            if not m:
                return self._error(path, 400)
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self._record(path, 416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end + 1]
        cut = self._pop(self.server.cut_after, path)
        self._record(path, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root)
        self.lock = threading.Lock()
        self.requests: List[Request] = []
        self.cut_after: Dict[str, List[int]] = {}
        self.fail: Dict[str, List[int]] = {}
        self.ignore_range = False
        self.delay = 0.0
        self.active = 0
        self.max_active = 0


class LocalHTTPServer:
    """Serve ``root`` on 127.0.0.1; ``url(path)`` gives the URL of a file under it."""

    def __init__(self, root: Path):
        self._srv = _Server(root)
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def root(self) -> Path:
        return self._srv.root

    @property
    def base_url(self) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    @property
    def requests(self) -> List[Request]:
        return self._srv.requests

    @property
    def cut_after(self) -> Dict[str, List[int]]:
        return self._srv.cut_after

    @property
    def fail(self) -> Dict[str, List[int]]:
        return self._srv.fail

    @property
    def ignore_range(self) -> bool:
        return self._srv.ignore_range

    @ignore_range.setter
    def ignore_range(self, value: bool) -> None:
        self._srv.ignore_range = value

    @property
    def server(self) -> "_Server":
        """The underlying server (set ``delay``, read ``max_active``)."""
        return self._srv

    def requests_for(self, path: str) -> List[Request]:
        p = "/" + path.lstrip("/")
        return [r for r in self.requests if r.path == p]

    def start(self) -> "LocalHTTPServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> "LocalHTTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def http_server(tmp_path):
    """A LocalHTTPServer serving ``tmp_path / "www"`` (created empty)."""
    root = tmp_path / "www"
    root.mkdir()
    with LocalHTTPServer(root) as srv:
        yield srv
