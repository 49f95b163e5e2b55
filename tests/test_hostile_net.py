"""The crawler's network guard on the real img2dataset path (in-process, no Ray): every textual
form of a private address is refused before any request, names are resolved and each address
checked, a redirect to a private address stops, images over the pixel limit are never decoded
(`too_large`), and a server trickling bytes is cut at the total deadline."""
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from vilactl.curation.fetch import FetchOptions, fetch
from vilactl.curation.safe_http import Policy, Refused, checked_addresses
from vilactl.pipeline.services.mirror import Mirror


def png(size, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    (root / "img.png").write_bytes(png((32, 32)))
    huge = png((20000, 20000), mode="1")      # 400 Mpx in a small file
    assert len(huge) < 2_000_000
    (root / "huge.png").write_bytes(huge)
    with Mirror(root) as m:
        yield m


class _Other(BaseHTTPRequestHandler):
    """/redirect?to=URL answers 302 to URL; /trickle sends one byte a second, forever."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\x89")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass


@pytest.fixture(scope="module")
def other():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def reasons(urls, tmp_path, **opts):
    res = fetch([str(i) for i in range(len(urls))], urls, FetchOptions(**opts),
                tmp_path / "work")
    return list(zip(res.column("reason").to_pylist(), res.column("error").to_pylist()))


def test_every_form_of_a_private_address_is_refused_unfetched(mirror, tmp_path):
    port = mirror.port
    hosts = ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0", "127.0.0.1", "localhost",
             "[::ffff:127.0.0.1]", "[::1]"]
    before = sum(mirror.hits.values())
    got = reasons([f"http://{h}:{port}/img.png" for h in hosts], tmp_path)
    assert [r for r, _ in got] == ["rejected_url"] * len(hosts), got
    assert sum(mirror.hits.values()) == before           # not one request reached the server
    # a name passes the literal checks: it was refused after resolution, before connecting
    assert "resolves to 127.0.0.1" in got[hosts.index("localhost")][1]


def test_names_are_resolved_and_every_address_checked():
    with pytest.raises(Refused, match="resolves to 127.0.0.1"):
        checked_addresses("localhost", 80, Policy())
    assert checked_addresses("localhost", 80, Policy(allow_hosts=("localhost:80",)))
    with pytest.raises(Refused):
        checked_addresses("localhost", 81, Policy(allow_hosts=("localhost:80",)))


def test_a_redirect_to_a_private_address_stops(mirror, other, tmp_path):
    target = f"{mirror.url}/img.png"
    allowed = other.removeprefix("http://")
    before = mirror.hits["/img.png"]
    got = reasons([f"{other}/redirect?to={target}"], tmp_path, allow_hosts=(allowed,))
    assert got[0][0] == "rejected_url" and "redirect" in got[0][1], got
    assert mirror.hits["/img.png"] == before
    by_name = f"http://localhost:{mirror.port}/img.png"    # a name that resolves privately
    got = reasons([f"{other}/redirect?to={by_name}"], tmp_path, allow_hosts=(allowed,))
    assert got[0][0] == "rejected_url" and "resolves to 127.0.0.1" in got[0][1], got
    assert mirror.hits["/img.png"] == before
    both = (allowed, mirror.url.removeprefix("http://"))
    assert reasons([f"{other}/redirect?to={target}"], tmp_path, allow_hosts=both) == \
        [(None, None)]
    assert mirror.hits["/img.png"] == before + 1


def test_huge_images_are_too_large_and_never_decoded(mirror, tmp_path):
    got = reasons([f"{mirror.url}/huge.png", f"{mirror.url}/img.png"], tmp_path,
                  allow_private_network=True)
    assert [r for r, _ in got] == ["too_large", None], got
    assert "not decoded" in got[0][1]        # refused from its header, before cv2 decoded it


def test_a_trickling_server_is_cut_at_the_total_deadline(other, tmp_path):
    t0 = time.monotonic()
    got = reasons([f"{other}/trickle"], tmp_path, allow_private_network=True, timeout=2.0,
                  deadline=3.0)
    assert got[0][0] == "timeout" and "total deadline of 3 s" in got[0][1], got
    assert time.monotonic() - t0 < 60      # generous: only a hang (the server never stops) fails
