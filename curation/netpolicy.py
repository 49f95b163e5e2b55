"""Which URLs a crawler may fetch.

Only http(s). By default a URL whose host is a literal loopback, private, link-local, reserved
or unspecified address, or `localhost`, is refused: a crawler on a shared cluster must not be
pointed at internal services by a poisoned URL list. (Host names are not resolved here; literal
addresses are what URL lists use to reach internal services.) The demo and tests, which serve
images from 127.0.0.1, pass allow_private=True explicitly.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def url_refusal(url: str | None, allow_private: bool = False) -> str | None:
    """Why `url` must not be fetched, or None when it may."""
    if not url:
        return "empty URL"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as e:
        return f"unparsable URL: {e}"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or 'none'!r} is not http(s)"
    if not host:
        return "no host"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return "host is localhost"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name, not a literal address
    if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved \
            or ip.is_unspecified or ip.is_multicast:
        return f"host {host} is a loopback/private/link-local address"
    return None
