"""urllib, as img2dataset calls it, with vilactl's network policy on every connection.

img2dataset fetches each URL with `urllib.request.urlopen`, which uses the process's installed
opener. While `guarded(policy)` is active that opener:
  * resolves the host itself, checks EVERY resolved address (curation/netpolicy.py) and then
    connects to the checked address — so DNS cannot answer differently between check and
    connect (rebinding), and `127.1`, `0x7f000001` or a name resolving to 10.0.0.5 are refused;
  * re-checks each redirect hop the same way (a public URL redirecting to 127.0.0.1 stops);
  * enforces a total deadline per URL across connect, headers, body and redirects: a watchdog
    thread shuts the socket down when it passes (urllib's timeout is per socket operation, so
    a server trickling one byte a second would otherwise hold a URL indefinitely).
A refused address reads `vilactl refused: …` and is counted as `rejected_url`; a passed deadline
reads `timed out: …` and is counted as `timeout` (curation/fetch_results.py).
"""
from __future__ import annotations

import contextlib
import functools
import heapq
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from vilactl.curation.netpolicy import host_allowed, ip_refusal, literal_ip, url_refusal


@dataclass(frozen=True)
class Policy:
    allow_private: bool = False
    allow_hosts: tuple[str, ...] = ()
    deadline: float = 30.0             # seconds per URL, all redirect hops together


class Refused(OSError):
    pass


class _Watchdog:
    """One thread that shuts down sockets whose deadline passed (weakly held: a socket closed
    and collected earlier is simply skipped)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref]] = []
        self._cv = threading.Condition()
        self._n = 0
        threading.Thread(target=self._loop, name="vilactl-deadlines", daemon=True).start()

    def watch(self, sock: socket.socket, deadline: float) -> None:
        with self._cv:
            self._n += 1
            heapq.heappush(self._heap, (deadline, self._n, weakref.ref(sock)))
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(None if not self._heap else
                                  self._heap[0][0] - time.monotonic())
                _, _, ref = heapq.heappop(self._heap)
            sock = ref()
            if sock is not None and sock.fileno() != -1:
                with contextlib.suppress(OSError):   # the plain TCP shutdown, also under TLS
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


_WATCHDOG: _Watchdog | None = None
_WATCHDOG_LOCK = threading.Lock()


def _watchdog() -> _Watchdog:
    global _WATCHDOG
    with _WATCHDOG_LOCK:
        if _WATCHDOG is None:
            _WATCHDOG = _Watchdog()
        return _WATCHDOG


def checked_addresses(host: str, port: int, policy: Policy) -> list[tuple]:
    """getaddrinfo results for host:port, every one of them allowed by the policy."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if policy.allow_private or host_allowed(host, port, policy.allow_hosts):
        return infos
    for *_, addr in infos:
        why = ip_refusal(literal_ip(addr[0].split("%")[0]))
        if why:
            raise Refused(f"vilactl refused: host {host} resolves to {addr[0]} ({why})")
    return infos


class _DeadlineResponse(http.client.HTTPResponse):
    """Reports a read cut short by the watchdog as the timeout it is."""

    def __init__(self, sock, *args, deadline: float, total: float, **kw):
        super().__init__(sock, *args, **kw)
        self._deadline, self._total = deadline, total

    def _checked(self, fn, *args):
        try:
            out = fn(*args)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if time.monotonic() >= self._deadline:
                raise TimeoutError(f"timed out: total deadline of {self._total:g} s passed") \
                    from e
            raise
        # a body without Content-Length just ends when the watchdog shuts the socket: that
        # is a cut transfer, not a complete one
        if time.monotonic() >= self._deadline:
            raise TimeoutError(f"timed out: total deadline of {self._total:g} s passed")
        return out

    def begin(self):
        return self._checked(super().begin)

    def read(self, amt=None):
        return self._checked(super().read, amt)

    def readinto(self, b):
        return self._checked(super().readinto, b)


class _GuardedMixin:
    def _setup(self, policy: Policy, deadline: float) -> None:
        self._policy, self._deadline = policy, deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline,
                                                total=policy.deadline)
        # http.client connects through this instance attribute (socket.create_connection)
        self._create_connection = self._checked_connection

    def _checked_connection(self, address, timeout=None, source_address=None):
        host, port = address
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: total deadline of {self._policy.deadline:g} s passed")
        err: OSError | None = None
        for family, kind, proto, _, addr in checked_addresses(host, port, self._policy):
            sock = socket.socket(family, kind, proto)
            try:
                per_op = timeout if isinstance(timeout, (int, float)) else left
                sock.settimeout(min(per_op, left))
                if source_address:
                    sock.bind(source_address)
                sock.connect(addr)          # the address that was checked, not the name
                _watchdog().watch(sock, self._deadline)
                return sock
            except OSError as e:
                sock.close()
                err = e
        raise err or OSError(f"cannot connect to {host}")


class _HTTPConnection(_GuardedMixin, http.client.HTTPConnection):
    def __init__(self, *args, policy: Policy, deadline: float, **kw):
        super().__init__(*args, **kw)
        self._setup(policy, deadline)


class _HTTPSConnection(_GuardedMixin, http.client.HTTPSConnection):
    def __init__(self, *args, policy: Policy, deadline: float, **kw):
        super().__init__(*args, **kw)
        self._setup(policy, deadline)

    def connect(self):
        """http.client's TLS connect, with the handshake under the watchdog too (a server
        trickling handshake bytes must not outlive the deadline)."""
        http.client.HTTPConnection.connect(self)        # TCP to the checked address
        sock = self._context.wrap_socket(self.sock, server_hostname=self._tunnel_host or
                                         self.host, do_handshake_on_connect=False)
        _watchdog().watch(sock, self._deadline)
        self.sock = sock
        sock.do_handshake()


def _deadline(req: urllib.request.Request, policy: Policy) -> float:
    if getattr(req, "vilactl_deadline", None) is None:
        req.vilactl_deadline = time.monotonic() + policy.deadline
    return req.vilactl_deadline


class _WithPolicy:
    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def _connection(self, cls, req):
        return functools.partial(cls, policy=self.policy, deadline=_deadline(req, self.policy))


class _HTTPHandler(_WithPolicy, urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(self._connection(_HTTPConnection, req), req)


class _HTTPSHandler(_WithPolicy, urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(self._connection(_HTTPSConnection, req), req, context=self._context)


class _RedirectHandler(_WithPolicy, urllib.request.HTTPRedirectHandler):
    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        why = url_refusal(newurl, self.policy.allow_private, self.policy.allow_hosts)
        if why:
            raise urllib.error.URLError(f"vilactl refused: redirect to {newurl}: {why}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:                 # one deadline for all hops
            new.vilactl_deadline = _deadline(req, self.policy)
        return new


def opener(policy: Policy) -> urllib.request.OpenerDirector:
    handlers = [_HTTPHandler(policy), _HTTPSHandler(policy), _RedirectHandler(policy)]
    if not policy.allow_private:     # through a proxy the destination is never checked here
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


@contextlib.contextmanager
def guarded(policy: Policy) -> Iterator[None]:
    """Install the guarded opener process-wide for the block (img2dataset's threads use it)."""
    saved = urllib.request._opener          # noqa: SLF001 — urllib offers no getter
    urllib.request.install_opener(opener(policy))
    try:
        yield
    finally:
        urllib.request.install_opener(saved)
