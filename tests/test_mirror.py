"""The loopback mirror produces exactly each fault it advertises."""
import http.client
import io
import socket
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image, UnidentifiedImageError

from vilactl.pipeline.services.mirror import FAULT_KINDS, NOT_AN_IMAGE, Mirror

IMG = "images/coyo/1.png"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    (root / "images" / "coyo").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="PNG")
    (root / IMG).write_bytes(buf.getvalue())
    (root.parent / "secret.txt").write_text("outside")
    with Mirror(root, slow_s=1.5) as m:
        m.png = buf.getvalue()
        yield m


def get(url, timeout=5):
    return urllib.request.urlopen(url, timeout=timeout)


def test_binds_loopback_only_and_serves_image(mirror):
    assert mirror.url.startswith("http://127.0.0.1:")
    with get(f"{mirror.url}/{IMG}") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"
        assert r.read() == mirror.png
    assert mirror.rewrite("http://mirror.vilactl.test/images/coyo/1.png?v=2") == \
        f"{mirror.url}/images/coyo/1.png?v=2"


@pytest.mark.parametrize("code", [404, 500])
def test_status_faults(mirror, code):
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{mirror.url}/fault/{code}/{IMG}")
    assert e.value.code == code


def test_missing_file_and_path_escape_are_404(mirror):
    for path in ("images/none.png", "../secret.txt", "%2e%2e/secret.txt"):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(f"{mirror.url}/{path}")
        assert e.value.code == 404


def test_slow_is_slower_than_a_download_timeout(mirror):
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        get(f"{mirror.url}/fault/slow/{IMG}", timeout=0.5)
    t0 = time.monotonic()
    with get(f"{mirror.url}/fault/slow/{IMG}", timeout=5) as r:
        assert r.read() == mirror.png
    assert time.monotonic() - t0 >= 1.5


def test_truncated_sends_half_the_promised_bytes(mirror):
    conn = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=5)
    conn.request("GET", f"/fault/truncated/{IMG}")
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(mirror.png)
    with pytest.raises(http.client.IncompleteRead) as e:
        resp.read()
    assert len(e.value.partial) == len(mirror.png) // 2


def test_notimage_claims_image_but_is_html(mirror):
    with get(f"{mirror.url}/fault/notimage/{IMG}") as r:
        assert r.headers["Content-Type"] == "image/png"
        body = r.read()
    assert body == NOT_AN_IMAGE
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(body)).load()


def test_redirect_points_to_the_plain_url(mirror):
    conn = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=5)
    conn.request("GET", f"/fault/redirect/{IMG}")
    resp = conn.getresponse()
    assert resp.status == 302 and resp.headers["Location"] == f"/{IMG}"
    with get(f"{mirror.url}/fault/redirect/{IMG}") as r:  # urllib follows it
        assert r.read() == mirror.png and r.url == f"{mirror.url}/{IMG}"


def test_noai_sends_the_opt_out_header(mirror):
    with get(f"{mirror.url}/fault/noai/{IMG}") as r:
        assert r.headers["X-Robots-Tag"] == "noai, noimageai"
        assert r.read() == mirror.png


def test_proxy_form_requests_and_unknown_fault(mirror):
    # As an HTTP proxy the mirror answers absolute-form targets by their path.
    conn = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=5)
    conn.request("GET", f"http://mirror.vilactl.test/{IMG}")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == mirror.png
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{mirror.url}/fault/teapot/{IMG}")
    assert e.value.code == 400
    assert set(FAULT_KINDS) == {"404", "500", "slow", "truncated", "notimage", "redirect", "noai"}
    assert mirror.hits[f"/{IMG}"] >= 3
