"""Loopback cloud metadata servers (GCE, EC2 IMDSv2, Azure IMDS) that can also misbehave.

Each :class:`MetadataServer` speaks one provider's protocol on ``127.0.0.1`` (port 0) and
records every request, so tests can count what detection sent. Its ``behaviour`` switches it
into the failure modes detection must survive: ``hang`` (accept, never answer), ``drip`` (a
header line every 5 ms, forever), ``html``, ``redirect``, ``huge`` (a 10 MiB body), ``error`` (500),
``not_found`` (404); ``delay_s`` holds any answer back.

Fixtures: list ``"tests.metadata_servers"`` in conftest's ``pytest_plugins``, or bind them in a
test module (``cloud_metadata = metadata_servers.cloud_metadata``; a plain import would trip
ruff's F811 where the fixture is a parameter name):

- ``metadata_servers`` (session): one running server per provider.
- ``cloud_metadata`` (function): those servers reset to well-behaved, the SDK variables
  pointed at them, detection switched on, DMI unreadable (so all three are probed), and the
  cloud cache emptied. Tweak ``cloud_metadata.gcp.behaviour`` etc. or
  ``cloud_metadata.write_dmi(...)`` inside the test.
- ``metadata_server_factory`` (function): extra servers, stopped after the test.
"""

from __future__ import annotations

import json
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

FLAVORS = ("gcp", "aws", "azure")
BEHAVIOURS = ("ok", "hang", "drip", "html", "redirect", "huge", "error", "not_found")

GCP_ZONE = "europe-west1-b"
AWS_REGION = "eu-west-1"
AZURE_REGION = "westeurope"
# What each server says the instance is (``instance_type = None``: the path answers 404).
INSTANCE_TYPES = {"gcp": "n2-standard-8", "aws": "m6i.large", "azure": "Standard_D4s_v3"}

# DMI strings as the three clouds and an ordinary machine expose them in /sys/class/dmi/id.
DMI_GCP = {"sys_vendor": "Google", "product_name": "Google Compute Engine", "bios_vendor": "Google"}
DMI_AWS = {"sys_vendor": "Amazon EC2", "product_name": "m6i.large", "bios_vendor": "Amazon EC2"}
DMI_AWS_XEN = {"sys_vendor": "Xen", "product_name": "HVM domU", "bios_version": "4.11.amazon"}
DMI_AZURE = {
    "sys_vendor": "Microsoft Corporation",
    "product_name": "Virtual Machine",
    "chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77",
}
DMI_HYPERV = {"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine"}
DMI_LAPTOP = {"sys_vendor": "LENOVO", "product_name": "20XW0026GE", "bios_vendor": "LENOVO"}

_HUGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class SeenRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: Mapping[str, str]
    at: float  # time.perf_counter() on arrival


class MetadataServer:
    """A threaded loopback HTTP server speaking one provider's metadata protocol."""

    def __init__(self, flavor: str, *, behaviour: str = "ok", region: str | None = None) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        self.flavor = flavor
        self.behaviour = behaviour
        self.delay_s = 0.0
        self.redirect_status = 302
        self.redirect_to = "http://127.0.0.1:9/"
        self.chunked = False
        self.region = region or {"gcp": GCP_ZONE, "aws": AWS_REGION, "azure": AZURE_REGION}[flavor]
        self.azure_json = False
        self.flavor_header = True
        self.instance_type: str | None = INSTANCE_TYPES[flavor]
        self.instance_type_delay_s = 0.0  # holds back the instance type's answer only
        self.requests: list[SeenRequest] = []
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def host_port(self) -> str:
        """``127.0.0.1:port``, the form ``GCE_METADATA_HOST`` takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``, the form the AWS and Azure variables take."""
        return f"http://{self.host_port}"

    @property
    def count(self) -> int:
        """How many requests arrived."""
        with self._lock:
            return len(self.requests)

    def record(self, seen: SeenRequest) -> None:
        """Remember a request (called by the handler)."""
        with self._lock:
            self.requests.append(seen)

    def reset(self) -> None:
        """Forget requests and tokens, free hung handlers, and behave well again."""
        self._release.set()
        self._release = threading.Event()
        with self._lock:
            self.requests.clear()
            self.tokens.clear()
        self.behaviour = "ok"
        self.delay_s = 0.0
        self.redirect_status = 302
        self.redirect_to = "http://127.0.0.1:9/"
        self.chunked = False
        self.azure_json = False
        self.flavor_header = True
        self.instance_type = INSTANCE_TYPES[self.flavor]
        self.instance_type_delay_s = 0.0
        self.region = {"gcp": GCP_ZONE, "aws": AWS_REGION, "azure": AZURE_REGION}[self.flavor]

    def wait_released(self, conn: socket.socket) -> None:
        """Hold a connection open without answering until the client leaves or reset/stop."""
        release = self._release
        while not release.wait(0.01):
            readable, _, _ = select.select([conn], [], [], 0)
            if readable:
                try:
                    if not conn.recv(1, socket.MSG_PEEK):
                        return  # the client gave up and closed
                except OSError:
                    return

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> MetadataServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A threaded server that takes a client hanging up early as normal (detection does that)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _handler_for(server: MetadataServer) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class bound to one server."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            server.record(
                SeenRequest(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    time.perf_counter(),
                )
            )
            if server.delay_s:
                time.sleep(server.delay_s)
            mode = server.behaviour
            if mode == "hang":
                server.wait_released(self.connection)
                self.close_connection = True
                return
            if mode == "drip":
                self._drip()
                return
            if mode == "html":
                self._send(200, b"<html><body>Sign in to the Wi-Fi</body></html>", "text/html")
                return
            if mode == "redirect":
                self.send_response(server.redirect_status)
                self.send_header("Location", server.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if mode == "huge":
                self._huge()
                return
            if mode == "error":
                self._send(500, b"internal error")
                return
            if mode == "not_found":
                self._send(404, b"not found")
                return
            {"gcp": self._gcp, "aws": self._aws, "azure": self._azure}[server.flavor]()

        # -- the protocols -------------------------------------------------------------------
        def _gcp(self) -> None:
            extra = {"Metadata-Flavor": "Google"} if server.flavor_header else {}
            if self.headers.get("Metadata-Flavor") != "Google":
                self._send(403, b"Missing Metadata-Flavor:Google header.", extra=extra)
            elif (
                urlsplit(self.path).path == "/computeMetadata/v1/instance/machine-type"
                and server.instance_type
            ):
                time.sleep(server.instance_type_delay_s)
                body = f"projects/123456789012/machineTypes/{server.instance_type}".encode()
                self._send(200, body, "application/text", extra=extra)
            elif urlsplit(self.path).path != "/computeMetadata/v1/instance/zone":
                self._send(404, b"not found", extra=extra)
            else:
                body = f"projects/123456789012/zones/{server.region}".encode()
                self._send(200, body, "application/text", extra=extra)

        def _aws(self) -> None:
            path = urlsplit(self.path).path
            if path == "/latest/api/token":
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if self.command != "PUT" or self.headers.get("X-Forwarded-For"):
                    self._send(403, b"forbidden")
                elif not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    self._send(400, b"bad ttl")
                else:
                    token = secrets.token_urlsafe(32)
                    server.tokens.add(token)
                    self._send(
                        200, token.encode(), extra={"X-aws-ec2-metadata-token-ttl-seconds": ttl}
                    )
                return
            # IMDSv2 only, as hardened instances are configured: no token, no answer.
            if self.headers.get("X-aws-ec2-metadata-token") not in server.tokens:
                self._send(401, b"unauthorized")
            elif path == "/latest/meta-data/placement/region":
                self._send(200, server.region.encode())
            elif path == "/latest/meta-data/instance-type" and server.instance_type:
                time.sleep(server.instance_type_delay_s)
                self._send(200, server.instance_type.encode())
            elif path == "/latest/meta-data/placement/availability-zone":
                self._send(200, f"{server.region}a".encode())
            else:
                self._send(404, b"not found")

        def _azure(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if self.headers.get("Metadata") != "true":
                self._send(400, b'{"error": "Bad request. Required metadata header not specified"}')
            elif "api-version" not in query:
                self._send(400, b'{"error": "Bad request. api-version was not specified"}')
            elif parts.path == "/metadata/instance/compute/location":
                if server.azure_json or query.get("format") != ["text"]:
                    self._send(200, json.dumps(server.region).encode(), "application/json")
                else:
                    self._send(200, server.region.encode(), "text/plain; charset=utf-8")
            elif parts.path == "/metadata/instance/compute/vmSize" and server.instance_type:
                time.sleep(server.instance_type_delay_s)
                self._send(200, server.instance_type.encode(), "text/plain; charset=utf-8")
            elif parts.path == "/metadata/instance/compute":
                compute = {"location": server.region, "zone": "1", "vmSize": server.instance_type}
                body = json.dumps(compute).encode()
                self._send(200, body, "application/json; charset=utf-8")
            else:
                self._send(404, b"not found")

        # -- writing ---------------------------------------------------------------------------
        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str = "text/plain",
            *,
            extra: Mapping[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            if server.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                half = len(body) // 2
                for part in (body[:half], body[half:]):
                    if part:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def _huge(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Metadata-Flavor", "Google")
            if not server.chunked:  # chunked here means "no length announced"
                self.send_header("Content-Length", str(_HUGE_BYTES))
            self.end_headers()
            block = b"a" * 65536
            try:
                for _ in range(_HUGE_BYTES // len(block)):
                    self.wfile.write(block)
            except OSError:
                pass  # the client stopped reading at its cap and left, as it should
            self.close_connection = True

        def _drip(self) -> None:
            release = server._release
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while not release.wait(0.005):
                    self.wfile.write(b"X-Drip: 1\r\n")
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True

    return Handler


def write_dmi(folder: Path, values: Mapping[str, str]) -> Path:
    """Write fake DMI strings (``sys_vendor`` etc.) into a folder and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name, value in values.items():
        (folder / name).write_text(value + "\n", encoding="utf-8")
    return folder


class RefusingPort:
    """A loopback port bound but not listening: every connect is refused, and nobody takes it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.host_port = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        """Release the port."""
        self._sock.close()


@dataclass
class CloudMetadata:
    """The three servers as one test sees them, with the environment pointed at them."""

    gcp: MetadataServer
    aws: MetadataServer
    azure: MetadataServer
    refusing: RefusingPort
    dmi_dir: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def servers(self) -> dict[str, MetadataServer]:
        """The servers by provider."""
        return {"gcp": self.gcp, "aws": self.aws, "azure": self.azure}

    def counts(self) -> dict[str, int]:
        """Requests received so far, by provider."""
        return {name: s.count for name, s in self.servers.items()}

    def write_dmi(self, values: Mapping[str, str]) -> None:
        """Make DMI readable with these strings (detection then probes only what they name)."""
        write_dmi(self.dmi_dir, values)
        self.monkeypatch.setenv("CARBONPIPE_DMI_DIR", str(self.dmi_dir))

    def refuse(self, *providers: str) -> None:
        """Point these providers' endpoints at a port that refuses connections."""
        for name in providers:
            self._point(name, self.refusing.url, self.refusing.host_port)

    def _point(self, provider: str, url: str, host_port: str) -> None:
        if provider == "gcp":
            self.monkeypatch.setenv("GCE_METADATA_HOST", host_port)
        elif provider == "aws":
            self.monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        else:
            self.monkeypatch.setenv("CARBONPIPE_AZURE_IMDS_ENDPOINT", url)


def point_env_at(monkeypatch: pytest.MonkeyPatch, servers: Mapping[str, MetadataServer]) -> None:
    """Set the SDK endpoint variables to these servers and switch detection on."""
    for name, server in servers.items():
        if name == "gcp":
            monkeypatch.setenv("GCE_METADATA_HOST", server.host_port)
        elif name == "aws":
            monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url)
        else:
            monkeypatch.setenv("CARBONPIPE_AZURE_IMDS_ENDPOINT", server.url)
    monkeypatch.setenv("CARBONPIPE_CLOUD_DETECTION", "on")
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)


@pytest.fixture(scope="session")
def metadata_servers() -> Iterator[dict[str, MetadataServer]]:
    """One loopback metadata server per provider for the whole session."""
    servers = {flavor: MetadataServer(flavor) for flavor in FLAVORS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def cloud_metadata(
    metadata_servers: dict[str, MetadataServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[CloudMetadata]:
    """Well-behaved servers, env pointed at them, DMI unreadable, caches empty."""
    from carbonpipe.location.detect import clear_cache

    for server in metadata_servers.values():
        server.reset()
    point_env_at(monkeypatch, metadata_servers)
    for name in ("GCE_METADATA_ROOT", "GCE_METADATA_IP", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("CARBONPIPE_CLOUD_PROVIDER", "CARBONPIPE_CLOUD_REGION", "CARBONPIPE_COUNTRY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(tmp_path / "cache"))
    dmi_dir = tmp_path / "dmi"  # absent until a test writes it: "no sysfs"
    monkeypatch.setenv("CARBONPIPE_DMI_DIR", str(dmi_dir))
    refusing = RefusingPort()
    clear_cache()
    try:
        yield CloudMetadata(
            metadata_servers["gcp"],
            metadata_servers["aws"],
            metadata_servers["azure"],
            refusing,
            dmi_dir,
            monkeypatch,
        )
    finally:
        clear_cache()
        refusing.close()
        for server in metadata_servers.values():
            server.reset()  # frees handlers a hanging test left behind


@pytest.fixture
def metadata_server_factory() -> Iterator[Any]:
    """Start extra servers with ``factory(flavor, behaviour=...)``; all stop after the test."""
    started: list[MetadataServer] = []

    def factory(flavor: str, *, behaviour: str = "ok", region: str | None = None) -> MetadataServer:
        server = MetadataServer(flavor, behaviour=behaviour, region=region)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
