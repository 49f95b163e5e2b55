"""Pure parts of downloading: which URLs may be fetched, and failure reasons."""
import pytest

from vilactl.curation.fetch_results import failure_reason, is_transient
from vilactl.curation.mmc4_images import attach, flatten
from vilactl.curation.netpolicy import url_refusal


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/a.png", "http://127.1/a.png",
                                 "http://10.1.2.3/a.png", "http://192.168.0.5/a.png",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/a.png",
                                 "http://0.0.0.0/a.png", "https://172.16.0.1/x"])
def test_private_hosts_refused_unless_allowed(url):
    assert "loopback" in url_refusal(url)
    assert url_refusal(url, allow_private=True) is None


@pytest.mark.parametrize("url,why", [("ftp://example.com/a.png", "scheme 'ftp'"),
                                     ("file:///etc/passwd", "scheme 'file'"), ("", "empty URL"),
                                     ("http:///nohost.png", "no host")])
def test_non_http_refused_always(url, why):
    assert why in url_refusal(url, allow_private=True)


def test_names_are_left_to_the_connection_check():
    # a name is resolved, and every address checked, when connecting (test_hostile_net.py)
    assert url_refusal("http://localhost/a.png") is None


def test_public_hosts_allowed():
    assert url_refusal("https://cdn.shopify.com/s/files/1/a.jpg?v=1") is None
    assert url_refusal("http://93.184.216.34/a.jpg") is None


@pytest.mark.parametrize("status,msg,reason", [
    ("success", None, None),
    ("failed_to_download", "HTTP Error 404: Not Found", "http_404"),
    ("failed_to_download", "HTTP Error 500: Internal Server Error", "http_500"),
    ("failed_to_download", "timed out", "timeout"),
    ("failed_to_download", "<urlopen error timed out>", "timeout"),
    ("failed_to_download", "IncompleteRead(1010 bytes read, 1010 more expected)",
     "incomplete_read"),
    ("failed_to_download", "Use of image disallowed by X-Robots-Tag directive", "opt_out"),
    ("failed_to_resize", "Image decoding error", "decode_error"),
    ("failed_to_download", "<urlopen error [Errno 111] Connection refused>", "connection_error"),
    ("failed_to_download", "something new", "other"),
])
def test_failure_reasons(status, msg, reason):
    assert failure_reason(status, msg) == reason


def test_transient_reasons():
    assert is_transient("timeout") and is_transient("http_503") and is_transient("incomplete_read")
    assert not is_transient("http_404") and not is_transient("opt_out")


def test_attach_policies_put_bytes_in_the_right_slots():
    docs = [{"doc_id": "s:1", "text_list": ["a", "b"], "similarity_matrix": [[0.3, 0.1],
                                                                             [0.1, 0.3]],
             "image_info": [{"raw_url": "http://x/0"}, {"raw_url": "http://x/1"}]},
            {"doc_id": "s:2", "text_list": ["c"], "similarity_matrix": [[0.2]],
             "image_info": [{"raw_url": "http://x/2"}]}]
    keys, urls = flatten(docs)
    assert keys == ["s:1#0", "s:1#1", "s:2#0"] and urls[2] == "http://x/2"

    def res(key, ok):
        return {"reason": None if ok else "http_404", "image": key.encode() if ok else None,
                "width": 1, "height": 1, "original_width": 1, "original_height": 1,
                "sha256": "h"}
    fetched = {"s:1#0": res("s:1#0", True), "s:1#1": res("s:1#1", False),
               "s:2#0": res("s:2#0", True)}
    kept, counts = attach(docs, fetched, require_all=True)
    assert [d["doc_id"] for d in kept] == ["s:2"] and counts["docs_dropped_missing_images"] == 1
    assert kept[0]["image_info"][0]["image"] == b"s:2#0"
    kept, counts = attach(docs, fetched, require_all=False)
    assert [d["doc_id"] for d in kept] == ["s:1", "s:2"] and counts["images_dropped"] == 1
    assert kept[0]["image_info"] == [{"raw_url": "http://x/0", **{
        k: v for k, v in fetched["s:1#0"].items() if k != "reason"}}]
    assert kept[0]["similarity_matrix"] == [[0.3, 0.1]] and kept[0]["text_list"] == ["a", "b"]
