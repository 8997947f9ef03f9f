"""Fault injection for the stores' tests: a proxy that goes down, fails, denies, hangs or drips.

Fixtures:

* ``flaky_store``  parametrised over ``s3``, ``gcs`` and ``azure``: a :class:`Flaky` whose
  ``store`` talks through a :class:`FaultProxy` (``down()``, ``fail(503)``, ``deny()``,
  ``hang()``, ``drip()``, ``up()``) and whose ``direct`` store reads the same bucket without
  the proxy.
* ``fault_proxy``  factory: ``fault_proxy(upstream=None, flavour="s3")`` (or ``"gcs"``,
  ``"azure"``: the shape of its error answers), a loopback server that forwards to
  ``upstream`` or, without one, answers every request with an error.
* ``closed_port``  a loopback port nothing listens on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from carbonpipe.stores.base import Store
from tests.object_servers import S3_BUCKET, STORE_PREFIX, free_port

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    }
)
_S3_CODES = {
    401: "InvalidAccessKeyId",
    403: "AccessDenied",
    404: "NoSuchKey",
    409: "ConditionalRequestConflict",
    412: "PreconditionFailed",
    429: "SlowDown",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def s3_error_body(status: int, code: str | None = None, message: str = "injected fault") -> bytes:
    """An S3-style XML error document."""
    code = code or _S3_CODES.get(status, "InternalError")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault-proxy</RequestId><HostId>fault-proxy</HostId></Error>"
    ).encode()


def gcs_error_body(status: int, message: str = "injected fault") -> bytes:
    """A GCS JSON API error document."""
    reason = {401: "required", 403: "forbidden", 404: "notFound", 429: "rateLimitExceeded"}
    error = {"domain": "global", "reason": reason.get(status, "backendError"), "message": message}
    return json.dumps({"error": {"code": status, "message": message, "errors": [error]}}).encode()


class _ProxyHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that botocore's "Expect: 100-continue" is answered at once, not after 1 s.
    protocol_version = "HTTP/1.1"
    server: _ProxyHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Keep the test output quiet."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def handle_expect_100(self) -> bool:
        if self.server.proxy._stalled_mode() is not None:
            return True  # a stalled server does not even say "100 Continue"
        return super().handle_expect_100()

    def _stall(self, mode: str, released: threading.Event, interval_s: float) -> None:
        """Hang (say nothing) or drip a never-ending response, until the proxy's mode changes."""
        self.close_connection = True
        if mode == "hang":
            released.wait()
            return
        # A status line, then one header line that never ends: every read gets a byte in time.
        drip = b"HTTP/1.1 200 OK\r\nX-Drip: "
        sent = 0
        while not released.is_set():
            try:
                self.wfile.write(drip[sent : sent + 1] if sent < len(drip) else b"z")
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            sent += 1
            released.wait(interval_s)

    def _handle(self) -> None:
        proxy = self.server.proxy
        stall = proxy._next_stall()
        if stall is not None:
            self._stall(*stall)
            return
        body = self._read_body()
        fault = proxy._next_fault(self.path.encode() + b" " + body)
        if fault is not None:
            status, code = fault
            if proxy.fail_delay_s:
                time.sleep(proxy.fail_delay_s)
            if proxy.flavour == "gcs":
                self._reply(status, [("Content-Type", "application/json")], gcs_error_body(status))
            elif proxy.flavour == "azure":
                from tests.azurite import azure_error

                self._reply(status, *azure_error(status, code))
            else:
                self._reply(
                    status, [("Content-Type", "application/xml")], s3_error_body(status, code)
                )
            return
        assert proxy.upstream is not None
        # Only the upstream's host: clients send the path (Azurite's /account included).
        host_port = proxy.upstream.split("://", 1)[1].split("/", 1)[0]
        conn = HTTPConnection(host_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            passed = [
                (k, v)
                for k, v in resp.getheaders()
                if k.lower() not in _HOP_BY_HOP and k.lower() not in ("date", "server")
            ]
            self._reply(resp.status, passed, data)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle


class _ProxyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """A loopback HTTP server in front of a real one that can be told to fail.

    ``up()`` forwards every request; ``down()`` stops listening (connection refused);
    ``fail(status, times=None)`` answers ``status`` with an S3- or GCS-shaped error body, for the
    next ``times`` requests or until told otherwise; ``deny()`` is ``fail(403)``; ``hang()``
    accepts connections and never answers; ``drip(interval_s)`` answers one byte of a response
    that never ends every ``interval_s``, so no read timeout ever fires. Stalled requests are
    let go when the mode changes. Without an upstream it only ever fails (503 unless told
    otherwise).
    """

    def __init__(self, upstream: str | None = None, flavour: str = "s3") -> None:
        if flavour not in ("s3", "gcs", "azure"):
            raise ValueError(f"flavour must be 's3', 'gcs' or 'azure', got {flavour!r}")
        self.upstream = upstream
        self.flavour = flavour
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self._lock = threading.Lock()
        self._status: int | None = None if upstream else 503
        self._code: str | None = None
        self._times: int | None = None
        self._match: bytes | None = None
        self._stall_mode: str | None = None
        self.fail_delay_s = 0.0
        self._drip_interval_s = 0.3
        self._released = threading.Event()
        self._server: _ProxyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _next_fault(self, request: bytes = b"") -> tuple[int, str | None] | None:
        with self._lock:
            self.requests += 1
            if self._status is None:
                return None
            if self._match is not None and self._match not in request:
                return None  # a request for another object passes
            fault = (self._status, self._code)
            if self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._status, self._code, self._times = None, None, None
            return fault

    def _stalled_mode(self) -> str | None:
        with self._lock:
            return self._stall_mode

    def _next_stall(self) -> tuple[str, threading.Event, float] | None:
        with self._lock:
            if self._stall_mode is None:
                return None
            self.requests += 1
            return self._stall_mode, self._released, self._drip_interval_s

    def _set_stall(self, mode: str | None) -> None:
        """Switch stalling to ``mode`` and let go of every request stalled so far."""
        with self._lock:
            self._stall_mode = mode
            released, self._released = self._released, threading.Event()
        released.set()

    @property
    def listening(self) -> bool:
        """Whether the proxy accepts connections."""
        return self._server is not None

    def start(self) -> FaultProxy:
        """Listen on the proxy's port (the same one after every ``down()``)."""
        if self._server is None:
            server = _ProxyHTTPServer(("127.0.0.1", self.port), _ProxyHandler)
            server.proxy = self
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._server = server
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: clients now get 'connection refused'."""
        server, self._server = self._server, None
        self._set_stall(self._stalled_mode())  # let stalled handlers go; keep the mode
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def up(self) -> None:
        """Forward every request to the upstream server."""
        if self.upstream is None:
            raise RuntimeError("this FaultProxy has no upstream to forward to")
        with self._lock:
            self._status, self._code, self._times, self._match = None, None, None, None
        self._set_stall(None)
        self.start()

    def down(self) -> None:
        """Refuse connections, as a store that is down does."""
        self.stop()

    def fail(
        self,
        status: int = 503,
        *,
        code: str | None = None,
        times: int | None = None,
        delay_s: float = 0.0,
        match: str | None = None,
    ) -> None:
        """Answer ``status`` (S3 error ``code``) to the next ``times`` requests, or to all,
        each after ``delay_s`` (an overloaded server that fails slowly); with ``match``, only
        requests whose path or body holds it fail (one object's key), the others pass."""
        with self._lock:
            self._status, self._code, self._times = status, code, times
            self.fail_delay_s = delay_s
            self._match = None if match is None else match.encode()
        self._set_stall(None)
        self.start()

    def deny(self) -> None:
        """Refuse our credentials (403 AccessDenied / 403 forbidden)."""
        self.fail(403)

    def hang(self) -> None:
        """Accept every connection and never answer, as a wedged server or load balancer does."""
        with self._lock:
            self._status, self._code, self._times = None, None, None
        self._set_stall("hang")
        self.start()

    def drip(self, interval_s: float = 0.3) -> None:
        """Answer one byte every ``interval_s``, forever: only a total deadline stops the client."""
        with self._lock:
            self._status, self._code, self._times = None, None, None
            self._drip_interval_s = interval_s
        self._set_stall("drip")
        self.start()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory of started :class:`FaultProxy` servers, all stopped after the test."""
    made: list[FaultProxy] = []

    def make(upstream: str | None = None, flavour: str = "s3") -> FaultProxy:
        proxy = FaultProxy(upstream, flavour).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@dataclass
class Flaky:
    """A store reached through a :class:`FaultProxy`, and the same bucket reached directly."""

    backend: str
    store: Store
    direct: Store
    proxy: FaultProxy


def s3_store_at(endpoint: str, like: Any) -> Store:
    """An S3Store for ``like``'s bucket and prefix at ``endpoint``, failing fast (one attempt)."""
    from carbonpipe.stores.s3 import S3Store

    return S3Store(
        like.bucket,
        like.prefix,
        endpoint_url=endpoint,
        max_attempts=1,
        connect_timeout_s=1.0,
        read_timeout_s=5.0,
    )


def gcs_store_at(endpoint: str, like: Any) -> Store:
    """A GCSStore for ``like``'s bucket and prefix at ``endpoint``, failing fast (no retries)."""
    from carbonpipe.stores.gcs import GCSStore

    return GCSStore(
        like.bucket,
        like.prefix,
        endpoint_url=endpoint,
        retry_timeout_s=0,
        connect_timeout_s=1.0,
        read_timeout_s=5.0,
    )


def store_at(backend: str, endpoint: str, like: Any) -> Store:
    """``like``'s bucket or container at ``endpoint`` (a proxy), failing fast."""
    from tests.azurite import azure_store_at

    makers = {"s3": s3_store_at, "gcs": gcs_store_at, "azure": azure_store_at}
    return makers[backend](endpoint, like)


@pytest.fixture(params=[pytest.param(b, id=b) for b in ("s3", "gcs", "azure")])
def flaky_store(
    request: pytest.FixtureRequest, fault_proxy: Callable[..., FaultProxy]
) -> Iterator[Flaky]:
    """A store whose server can be taken down, made to answer 503, or refuse credentials."""
    backend = request.param
    direct: Any = request.getfixturevalue(f"{backend}_store")
    endpoint = request.getfixturevalue(f"{backend}_endpoint")
    proxy = fault_proxy(endpoint, backend)
    flaky = store_at(backend, proxy.url, direct)
    yield Flaky(backend=backend, store=flaky, direct=direct, proxy=proxy)
    flaky.close()


def unreachable_store(backend: str, port: int, like: Any = None) -> Store:
    """An S3, GCS or Azure store pointed at a loopback port nothing listens on."""
    from carbonpipe.stores.azure import AzureBlobStore
    from carbonpipe.stores.gcs import GCSStore
    from carbonpipe.stores.s3 import S3Store

    endpoint = f"http://127.0.0.1:{port}"
    if like is None:
        like = {
            "s3": lambda: S3Store(S3_BUCKET, STORE_PREFIX),
            "gcs": lambda: GCSStore("cp-down", STORE_PREFIX),
            "azure": lambda: AzureBlobStore("cp-down", STORE_PREFIX, account_name="cpdown"),
        }[backend]()
    if backend == "azure":
        # Its own account key, so that no credential chain is consulted for a store that is down.
        return AzureBlobStore(
            like.container,
            like.prefix,
            endpoint_url=endpoint,
            account_name=like.account_name or "cpdown",
            account_key="ZG93bg==",
            max_attempts=1,
            connect_timeout_s=1.0,
            read_timeout_s=5.0,
        )
    return store_at(backend, endpoint, like)


__all__ = [
    "FaultProxy",
    "Flaky",
    "gcs_error_body",
    "gcs_store_at",
    "s3_error_body",
    "s3_store_at",
    "store_at",
    "unreachable_store",
]
