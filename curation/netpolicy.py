"""Which URLs and addresses a crawler may fetch (pure decisions; curation/safe_http.py enforces
them on every connection).

Only http(s). By default only *global* addresses are fetched: a crawler on a shared cluster must
not be pointed at internal services (cloud metadata, a database's HTTP port) by a poisoned URL
list. The address class is Python's own (`ipaddress.is_global`, which covers loopback, private,
link-local, shared, reserved and unspecified ranges, IPv4-mapped IPv6 included). Every textual
IPv4 form the C resolver accepts (`127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`, `0`) is
normalised with `inet_aton` before it is classified; host names are resolved and each of their
addresses checked at connection time, for every redirect hop too. `allow_private` (the demo's
127.0.0.1 mirror) lifts the address check; `allow_hosts` lifts it for named `host[:port]`s only.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host string denotes without DNS, in any form the resolver accepts."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any: Python
    calls some of those prefixes global, whatever IPv4 address they lead to."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def ip_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why connecting to `ip` is refused, or None for a global unicast address."""
    inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    for addr in (ip, inner):
        if addr is not None and not (addr.is_global and not addr.is_multicast):
            return f"address {ip} is loopback/private/link-local/reserved, not a public address"
    return None


def host_allowed(host: str, port: int | None, allow_hosts: tuple[str, ...]) -> bool:
    """Whether `host[:port]` is named in `allow_hosts` (entries `host` or `host:port`)."""
    for entry in allow_hosts:
        allowed = urlsplit("//" + entry)
        if allowed.hostname == host.lower().strip("[]") and allowed.port in (None, port):
            return True
    return False


def url_refusal(url: str | None, allow_private: bool = False,
                allow_hosts: tuple[str, ...] = ()) -> str | None:
    """Why `url` must not be fetched, or None when it may (names are checked again, resolved,
    when connecting)."""
    if not url:
        return "empty URL"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:
        return f"unparsable URL: {e}"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or 'none'!r} is not http(s)"
    if not host:
        return "no host"
    if allow_private or host_allowed(host, port or _default_port(parts.scheme), allow_hosts):
        return None
    ip = literal_ip(host)
    return None if ip is None else ip_refusal(ip)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
