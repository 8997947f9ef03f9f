"""Azurite, Microsoft's Azure Storage emulator (from the npm registry), for the suite.

``make test`` installs it (``npm install --prefix .venv/azurite azurite@VERSION``); the
``CARBONPIPE_AZURITE`` variable may name another ``azurite-blob`` executable. Fixtures:

* ``azure_endpoint`` (session) the account URL of an Azurite blob service on 127.0.0.1 with
  in-memory persistence: ``http://127.0.0.1:PORT/devstoreaccount1``.
* ``azure_store``    an :class:`AzureBlobStore` on a fresh container; also sets
  ``AZURE_STORAGE_CONNECTION_STRING`` for the test, so ``open_store("az://...")`` reaches it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.stores.base import Store

AZURITE_VERSION = "3.37.0"
# Azurite's one well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
STORE_PREFIX = "carbon"
_REPO = Path(__file__).resolve().parents[1]
_LISTENS = re.compile(r"Blob service (?:is )?successfully listens on (http://\S+)")


def azurite_binary() -> str:
    """The ``azurite-blob`` executable: ``$CARBONPIPE_AZURITE``, ``make test``'s, or on PATH."""
    candidates = [
        os.environ.get("CARBONPIPE_AZURITE", ""),
        str(_REPO / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "Azurite is not installed: run `make test`, or "
        f"`npm install --prefix .venv/azurite azurite@{AZURITE_VERSION}`",
        pytrace=False,
    )


_AZURE_CODES = {
    400: "InvalidInput",
    401: "NoAuthenticationInformation",
    403: "AuthenticationFailed",
    404: "BlobNotFound",
    409: "BlobAlreadyExists",
    412: "ConditionNotMet",
    429: "ServerBusy",
    500: "InternalError",
    503: "ServerBusy",
}


def azure_error(status: int, code: str | None = None) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and XML body of an Azure Storage error (the code is in ``x-ms-error-code``)."""
    code = code or _AZURE_CODES.get(status, "InternalError")
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>injected fault</Message></Error>"
    ).encode()
    return [("Content-Type", "application/xml"), ("x-ms-error-code", code)], body


def connection_string(endpoint: str) -> str:
    """A connection string for Azurite's development account at ``endpoint``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )


@pytest.fixture(scope="session")
def azure_endpoint() -> Iterator[str]:
    """Start Azurite's blob service on a free loopback port, in memory; yield its account URL."""
    workdir = Path(tempfile.mkdtemp(prefix="carbonpipe-azurite-"))
    log = workdir / "azurite.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                azurite_binary(),
                "--inMemoryPersistence",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--skipApiVersionCheck",
                "--loose",
                "--silent",  # no access log: a line per request costs the emulator's one thread
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            found = _LISTENS.search(log.read_text(errors="replace"))
            if found:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Azurite did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield f"{found.group(1).rstrip('/')}/{AZURITE_ACCOUNT}"
    finally:
        proc.kill()  # in memory: nothing to flush, and a graceful stop waits on idle sockets
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def azure_create_container(endpoint: str, name: str) -> None:
    """Create a container in Azurite."""
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(connection_string(endpoint)) as service:
        service.create_container(name)


@pytest.fixture
def azure_store(azure_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """An AzureBlobStore on a fresh container, reached through AZURE_STORAGE_CONNECTION_STRING."""
    from carbonpipe.stores.azure import AzureBlobStore

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(azure_endpoint))
    container = f"cp-test-{uuid.uuid4().hex[:12]}"
    azure_create_container(azure_endpoint, container)
    store = AzureBlobStore(container, STORE_PREFIX, max_attempts=2)
    yield store
    store.close()


def azure_store_at(endpoint: str, like: Any) -> Store:
    """An AzureBlobStore for ``like``'s container and prefix at ``endpoint``, failing fast."""
    from carbonpipe.stores.azure import AzureBlobStore

    return AzureBlobStore(
        like.container,
        like.prefix,
        endpoint_url=endpoint,
        max_attempts=1,
        connect_timeout_s=1.0,
        read_timeout_s=5.0,
    )


__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "azure_create_container",
    "azure_error",
    "azure_store_at",
    "azurite_binary",
    "connection_string",
]
