"""The loopback image mirror: serves the demo world's images on 127.0.0.1, faults included.

The demo world's URLs look like real web URLs (`http://mirror.vilactl.test/images/…`); the mirror
answers them by path, either directly (rewrite the host with `Mirror.rewrite`) or as an HTTP
proxy (request targets in absolute form), so the real img2dataset download path runs against it.
A URL under `/fault/<kind>/<path>` produces that fault for the file at `<path>`:

  404, 500     the status code
  slow         the image, after `slow_s` seconds (longer than the download timeout)
  truncated    a Content-Length for the whole file, then only half the bytes, then close
  notimage     status 200, an image content type, and an HTML body
  redirect     302 to the plain URL of the same file
  noai         the image, with `X-Robots-Tag: noai, noimageai` (an opt-out a crawler respects)

It binds only to 127.0.0.1 (an ephemeral port by default) and counts requests per path.
"""
from __future__ import annotations

import collections
import mimetypes
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

FAULT_KINDS = ("404", "500", "slow", "truncated", "notimage", "redirect", "noai")
NOT_AN_IMAGE = b"<html><body><h1>Sorry, this page is not an image</h1></body></html>"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test and demo output clean
        pass

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        path = urlsplit(self.path).path  # absolute-form (proxy) targets reduce to their path
        self.server.count(path)
        if path == "/health":
            return self._send(200, b"ok", "text/plain", head=head)
        fault, rel = None, path.lstrip("/")
        if rel.startswith("fault/"):
            _, fault, rel = (rel.split("/", 2) + [""])[:3]
            if fault not in FAULT_KINDS:
                return self._send(400, f"unknown fault {fault}".encode(), "text/plain", head=head)
        if fault in ("404", "500"):
            return self._send(int(fault), f"fault {fault}".encode(), "text/plain", head=head)
        body = self.server.read(rel)
        if body is None:
            return self._send(404, b"not found", "text/plain", head=head)
        ctype = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        if fault == "redirect":
            return self._send(302, b"", "text/plain", {"Location": "/" + rel}, head=head)
        if fault == "notimage":
            return self._send(200, NOT_AN_IMAGE, ctype, head=head)
        if fault == "slow":
            time.sleep(self.server.slow_s)
        if fault == "truncated":
            return self._send_truncated(body, ctype)
        extra = {"X-Robots-Tag": "noai, noimageai"} if fault == "noai" else {}
        return self._send(200, body, ctype, extra, head=head)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_truncated(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # downloaders open hundreds of connections at once

    def __init__(self, root: Path, port: int, slow_s: float):
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = root.resolve()
        self.slow_s = slow_s
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        import sys

        # Clients that gave up (a timeout on a slow URL) close the socket mid-reply: expected.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def count(self, path: str) -> None:
        with self._lock:
            self.hits[path] += 1

    def read(self, rel: str) -> bytes | None:
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None  # also refuses ../ escapes from the served folder
        return target.read_bytes()


class Mirror:
    """Context manager running the mirror in a background thread.

    >>> with Mirror("workspace/world") as m:
    ...     m.url            # 'http://127.0.0.1:40123'
    """

    def __init__(self, root: str | Path, port: int = 0, slow_s: float = 3.0):
        self.root, self.port, self.slow_s = Path(root), port, slow_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Mirror:
        self._server = _Server(self.root, self.port, self.slow_s)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="vilactl-mirror",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Mirror:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> collections.Counter:
        return self._server.hits if self._server else collections.Counter()

    def rewrite(self, url: str) -> str:
        """Point a world URL (any host) at this mirror, keeping its path and query."""
        parts = urlsplit(url)
        return self.url + parts.path + (f"?{parts.query}" if parts.query else "")
