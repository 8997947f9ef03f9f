"""The Azure Blob Storage backend, through azure-storage-blob.

Conditional writes are Azure's own: ``put_if_absent`` is a Put Blob with ``If-None-Match: *``
(``overwrite=False``) and ``replace`` one with ``If-Match: <etag>``; a lost condition (409
BlobAlreadyExists or 412 ConditionNotMet) raises :class:`PreconditionFailed`. Blobs are written
with one Put Blob (records and reports are far below the SDK's 64 MiB single-put size), which is
the request Azure checks preconditions on atomically.

The account comes from the SDK's normal chain, first match wins:

1. ``connection_string=`` or ``AZURE_STORAGE_CONNECTION_STRING`` (account key or SAS inside);
2. ``account_name=`` / ``AZURE_STORAGE_ACCOUNT_NAME`` with ``account_key=`` /
   ``AZURE_STORAGE_ACCOUNT_KEY``, else ``sas_token=`` / ``AZURE_STORAGE_SAS_TOKEN``, else
   ``credential=``, else azure-identity's ``DefaultAzureCredential`` (workload identity on AKS,
   managed identity on VMs, ``az login`` on a laptop).

``endpoint_url=`` (or ``AZURE_STORAGE_BLOB_ENDPOINT``) replaces the blob endpoint, a connection
string's too, for an emulator or a private endpoint; sovereign clouds set ``endpoint_suffix=`` (or
``AZURE_STORAGE_ENDPOINT_SUFFIX``, e.g. ``core.chinacloudapi.cn``). No key, SAS or connection
string ever appears in an error message, a log line or the spool. The SDK is imported on first use.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from carbonpipe._optional import needs_extra
from carbonpipe.errors import (
    ObjectNotFound,
    ObjectRejected,
    PreconditionFailed,
    StoreError,
    StorePermissionDenied,
    StoreTimeout,
    StoreUnavailable,
)
from carbonpipe.stores.base import Store, StoredObject, bucket_location, check_key
from carbonpipe.stores.deadline import DEFAULT_STORE_TIMEOUT_S, call_with_deadline, check_timeout
from carbonpipe.stores.redact import redact

T = TypeVar("T")

DEFAULT_ENDPOINT_SUFFIX = "core.windows.net"
NO_CREDENTIALS = (
    "no usable Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
    "AZURE_STORAGE_ACCOUNT_NAME with a workload or managed identity, AZURE_STORAGE_ACCOUNT_KEY "
    "or AZURE_STORAGE_SAS_TOKEN"
)
# Answers about the container or the account, not the object: every key would get them.
_STORE_CODES = frozenset(
    {
        "ContainerNotFound",
        "ContainerBeingDeleted",
        "ContainerDisabled",
        "AccountIsDisabled",
        "AccountBeingCreated",
        "InvalidResourceName",
        "InvalidUri",
        "UnsupportedHttpVerb",
    }
)
_DENIED_CODES = frozenset(
    {
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch",
        "AuthorizationServiceMismatch",
        "AuthorizationSourceIPMismatch",
        "InsufficientAccountPermissions",
        "KeyVaultAccessTokenCannotBeAcquired",
        "NoAuthenticationInformation",
    }
)
_PRECONDITION_CODES = frozenset({"BlobAlreadyExists", "ConditionNotMet", "TargetConditionNotMet"})


_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def _import_blob() -> Any:
    """Import azure-storage-blob (seconds of imports that must not count against a deadline)."""
    with needs_extra("azure", "Azure Blob stores"):
        from azure.storage import blob

    http_log = logging.getLogger(_HTTP_LOGGER)
    if http_log.level == logging.NOTSET:
        # The SDK logs every request and response at INFO; as the Azure Airflow provider does,
        # keep that to warnings unless the application chose a level itself.
        http_log.setLevel(logging.WARNING)
    return blob


def parse_connection_string(text: str) -> dict[str, str]:
    """``Name=value;...`` as a dict with upper-case names; ``ValueError`` (no secret) if malformed."""
    settings: dict[str, str] = {}
    for part in text.strip().rstrip(";").split(";"):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError("the Azure connection string is malformed (expected Name=value;...)")
        settings[name.strip().upper()] = value.strip()
    return settings


class AzureBlobStore(Store):
    """Records and reports under ``az://container/prefix``.

    Args:
        container: the container name.
        prefix: folder inside the container that every key is relative to ("" for the root).
        account_name: the storage account; else the connection string's, else
            ``AZURE_STORAGE_ACCOUNT_NAME``.
        endpoint_url: the blob service endpoint (an emulator, a private endpoint); on a loopback
            address without a path the account is appended, as Azurite's URLs need.
        endpoint_suffix: the cloud's storage suffix (default ``core.windows.net``).
        connection_string: an account connection string (else ``AZURE_STORAGE_CONNECTION_STRING``).
        account_key / sas_token / credential: the account's key, a SAS token, or any credential
            azure-storage-blob accepts (a ``TokenCredential`` such as ``DefaultAzureCredential``).
        client: a ready ``ContainerClient`` (then the connection options are ignored).
        connect_timeout_s: seconds to open a connection (at most ``timeout_s``).
        read_timeout_s: seconds to wait for each read of a response (at most ``timeout_s``).
        max_attempts: attempts per request, first included, kept small so that a store that is
            down fails fast and the spool takes over.
        timeout_s: the most seconds one operation may take, attempts and reads included
            (``store_timeout_s``); past it the call raises :class:`StoreTimeout`.
        list_page_size: blobs per listing page (Azure's most, 5000, by default).
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account_name: str | None = None,
        endpoint_url: str | None = None,
        endpoint_suffix: str | None = None,
        connection_string: str | None = None,
        account_key: str | None = None,
        sas_token: str | None = None,
        credential: Any = None,
        client: Any = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        max_attempts: int = 3,
        timeout_s: float | str = DEFAULT_STORE_TIMEOUT_S,
        list_page_size: int | None = None,
    ) -> None:
        prefix, uri = bucket_location("az", container, prefix)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if list_page_size is not None and not 1 <= list_page_size <= 5000:
            raise ValueError(f"list_page_size must be 1..5000, got {list_page_size}")
        if endpoint_url is not None and urlsplit(endpoint_url).scheme not in ("http", "https"):
            raise ValueError(f"endpoint_url must be an http(s) URL, got {redact(endpoint_url)!r}")
        self.timeout_s = check_timeout(timeout_s)
        self.container = container
        self.bucket = container  # the name the other object stores use
        self.prefix = prefix
        self.uri = uri
        self.account_name = account_name
        self.endpoint_url = endpoint_url
        self.endpoint_suffix = endpoint_suffix
        self._connection_string = connection_string
        self._account_key = account_key
        self._sas_token = sas_token
        self._credential = credential
        self._connect_timeout_s = min(connect_timeout_s, self.timeout_s)
        self._read_timeout_s = min(read_timeout_s, self.timeout_s)
        self._max_attempts = max_attempts
        self._page_size = list_page_size
        self._client = client
        self._owns_client = client is None  # close() leaves a caller's client alone
        self._owned_credential: Any = None
        self._client_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``ContainerClient``, created on first use (no I/O happens in ``__init__``)."""
        if self._client is None:
            _import_blob()
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        blob = _import_blob()
        options: dict[str, Any] = {
            "connection_timeout": self._connect_timeout_s,
            "read_timeout": self._read_timeout_s,
            "retry_policy": blob.LinearRetry(
                backoff=0.2,  # type: ignore[arg-type]
                random_jitter_range=0.1,  # type: ignore[arg-type]
                retry_total=self._max_attempts - 1,
            ),
        }
        try:
            url, credential = self._account()
            service = blob.BlobServiceClient(url, credential=credential, **options)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(
                f"cannot create an Azure Blob client for {self.uri}: {_describe(exc)}"
            ) from exc
        return service.get_container_client(self.container)

    def _account(self) -> tuple[str, Any]:
        """(account URL, credential) from the options and the environment, in the chain's order."""
        env = os.environ
        endpoint = self.endpoint_url or env.get("AZURE_STORAGE_BLOB_ENDPOINT") or None
        connection = self._connection_string
        explicit = (self.account_name, self._account_key, self._sas_token, self._credential)
        if connection is None and all(given is None for given in explicit):
            # An account or credential given as an option outranks the environment's string.
            connection = env.get("AZURE_STORAGE_CONNECTION_STRING") or None
        if connection is not None:
            settings = parse_connection_string(connection)
            if settings.get("USEDEVELOPMENTSTORAGE", "").lower() == "true":
                raise ValueError("UseDevelopmentStorage=true: give Azurite's BlobEndpoint instead")
            account = settings.get("ACCOUNTNAME") or self.account_name or ""
            url = endpoint or settings.get("BLOBENDPOINT")
            if not url:
                if not account:
                    raise ValueError("the Azure connection string names no AccountName")
                protocol = settings.get("DEFAULTENDPOINTSPROTOCOL", "https")
                suffix = settings.get("ENDPOINTSUFFIX") or self._suffix()
                url = f"{protocol}://{account}.blob.{suffix}"
            return self._account_url(url, account), self._connection_credential(settings)
        account = (
            self.account_name
            or env.get("AZURE_STORAGE_ACCOUNT_NAME")
            or env.get("AZURE_STORAGE_ACCOUNT")
            or ""
        )
        if not account and not endpoint:
            raise StorePermissionDenied(f"cannot open {self.uri}: {NO_CREDENTIALS}")
        url = self._account_url(endpoint or f"https://{account}.blob.{self._suffix()}", account)
        return url, self._named_credential(account)

    def _suffix(self) -> str:
        suffix = self.endpoint_suffix or os.environ.get("AZURE_STORAGE_ENDPOINT_SUFFIX")
        return (suffix or DEFAULT_ENDPOINT_SUFFIX).strip(".")

    @staticmethod
    def _account_url(url: str, account: str) -> str:
        """``url``, with ``/account`` appended for a loopback emulator that has no path."""
        url = url.rstrip("/")
        parts = urlsplit(url)
        host = parts.hostname or ""
        if account and not parts.path and (host == "localhost" or _is_ip(host)):
            url = f"{url}/{account}"
        return url

    def _connection_credential(self, settings: dict[str, str]) -> Any:
        from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

        if self._credential is not None:
            return self._credential
        if settings.get("ACCOUNTNAME") and settings.get("ACCOUNTKEY"):
            return AzureNamedKeyCredential(settings["ACCOUNTNAME"], settings["ACCOUNTKEY"])
        if settings.get("SHAREDACCESSSIGNATURE"):
            return AzureSasCredential(settings["SHAREDACCESSSIGNATURE"].lstrip("?"))
        return None  # an anonymous, public container

    def _named_credential(self, account: str) -> Any:
        from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

        if self._credential is not None:
            return self._credential
        env = os.environ
        key = (
            self._account_key
            or env.get("AZURE_STORAGE_ACCOUNT_KEY")
            or env.get("AZURE_STORAGE_KEY")
        )
        if key:
            if not account:
                raise StorePermissionDenied(
                    f"cannot open {self.uri}: an account key needs AZURE_STORAGE_ACCOUNT_NAME"
                )
            return AzureNamedKeyCredential(account, key)
        sas = self._sas_token or env.get("AZURE_STORAGE_SAS_TOKEN")
        if sas:
            return AzureSasCredential(sas.lstrip("?"))
        with needs_extra("azure", "Azure Blob stores"):
            from azure.identity import DefaultAzureCredential
        # Workload identity on AKS, managed identity on VMs, the Azure CLI's login elsewhere.
        self._owned_credential = DefaultAzureCredential()
        return self._owned_credential

    def reopen_options(self) -> dict[str, str]:
        """Non-secret options another process needs to reopen this store (the spool keeps them)."""
        options = {}
        if self.endpoint_url:
            # Never a SAS in its query: the replaying process takes credentials from its chain.
            options["endpoint_url"] = self.endpoint_url.split("?", 1)[0]
        if self.account_name:
            options["account_name"] = self.account_name
        if self.endpoint_suffix:
            options["endpoint_suffix"] = self.endpoint_suffix
        options["timeout_s"] = f"{self.timeout_s:g}"  # a replay keeps the same deadline
        return options

    def _full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Callable[[], T], *, write: bool = False) -> T:
        """Run one SDK call within ``timeout_s`` and translate its failures into carbonpipe errors."""
        _import_blob()  # imported here, not on the clock of the call's deadline
        where = self.url_for(key) if key else self.uri
        try:
            return call_with_deadline(fn, self.timeout_s, lambda: f"cannot {what} {where}")
        except StoreError:
            raise
        except Exception as exc:
            raise _translate(exc, what, where, self.container, write=write) from exc

    # -- the Store interface --------------------------------------------------------------

    def _upload(self, what: str, key: str, data: bytes, content_type: str, **cond: Any) -> str:
        blob = _import_blob()
        full = self._full_key(key)

        def put() -> str:
            response = self.client.get_blob_client(full).upload_blob(
                data,
                length=len(data),
                content_settings=blob.ContentSettings(content_type=content_type),
                **cond,
            )
            return str(response["etag"])

        return self._call(what, key, put, write=True)

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        # overwrite=False is Put Blob with If-None-Match: *.
        return self._upload("create", key, data, content_type, overwrite=False)

    def replace(
        self,
        key: str,
        data: bytes,
        *,
        if_version: str,
        content_type: str = "application/json",
    ) -> str:
        if not if_version:
            raise ValueError("if_version must be the ETag returned by get() or a write")
        from azure.core import MatchConditions

        try:
            return self._upload(
                "replace",
                key,
                data,
                content_type,
                overwrite=True,
                etag=if_version,
                match_condition=MatchConditions.IfNotModified,
            )
        except ObjectNotFound as exc:
            # If-Match on a missing blob: to the caller the swap just lost.
            raise PreconditionFailed(
                f"{self.url_for(key)} does not exist (expected version {if_version})"
            ) from exc

    def get(self, key: str) -> StoredObject:
        full = self._full_key(key)

        def read() -> StoredObject:
            downloader = self.client.download_blob(full)
            data = downloader.readall()
            # The ETag comes from the same response as the bytes, so they always agree.
            return StoredObject(key=key, data=bytes(data), version=str(downloader.properties.etag))

        return self._call("read", key, read)

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        strip = len(base)

        def first() -> Iterator[Any]:
            options = {"results_per_page": self._page_size} if self._page_size else {}
            return iter(self.client.list_blobs(name_starts_with=base + prefix, **options))

        # The pager fetches further pages as it goes, so each step may fail like a request.
        blobs = self._call("list", prefix, first, write=True)
        while True:
            item = self._call("list", prefix, lambda: next(blobs, None), write=True)
            if item is None:
                return
            name = str(item.name)[strip:]
            if name and not name.endswith("/"):  # skip portal-made "folder" placeholders
                yield name

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        try:
            self._call("delete", key, lambda: self.client.delete_blob(full))
        except ObjectNotFound:
            return  # a missing key is not an error

    def put_artifact(self, key: str, data: bytes, *, content_type: str) -> str:
        self._upload("write", key, data, content_type, overwrite=True)
        return self.url_for(key)

    def close(self) -> None:
        if not self._owns_client:
            return
        client, self._client = self._client, None
        credential, self._owned_credential = self._owned_credential, None
        if client is not None:
            client.close()
        if credential is not None:
            credential.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    """The failure's first line, with keys, SAS signatures and URL userinfo removed."""
    text = str(getattr(exc, "message", None) or exc).strip()
    line = text.splitlines()[0][:300] if text else ""
    return redact(f"{type(exc).__name__}: {line}" if line else type(exc).__name__)


def _translate(exc: Exception, what: str, url: str, container: str, *, write: bool) -> StoreError:
    """Return the carbonpipe error for an azure-core / azure-storage-blob failure."""
    from azure.core import exceptions as ax

    where = f"cannot {what} {url}"
    if isinstance(exc, (ax.ServiceRequestTimeoutError, ax.ServiceResponseTimeoutError)):
        return StoreTimeout(f"{where}: Azure did not answer in time ({_describe(exc)})")
    if isinstance(exc, (ax.ServiceRequestError, ax.ServiceResponseError)):
        return StoreUnavailable(f"{where}: Azure Blob Storage unreachable ({_describe(exc)})")
    if isinstance(exc, ax.ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        # Raised by a credential before any request: no identity, a failed token exchange.
        return StorePermissionDenied(f"{where}: {NO_CREDENTIALS} ({_describe(exc)})")
    if not isinstance(exc, ax.HttpResponseError):
        return StoreError(f"{where}: {_describe(exc)}")
    status = int(getattr(exc, "status_code", 0) or 0)
    code = getattr(exc, "error_code", None) or ""
    code = str(getattr(code, "value", code))  # a StorageErrorCode enum, or the header's text
    detail = f"{code or 'HTTP ' + str(status)} ({status})"
    if status == 412 or code in _PRECONDITION_CODES:
        return PreconditionFailed(f"{where}: precondition failed, {detail}")
    if code == "ContainerNotFound" or (status == 404 and write and code != "BlobNotFound"):
        # Not the object's absence: the store itself is missing, so writes must be spooled.
        return StoreUnavailable(f"{where}: container {container!r} does not exist, {detail}")
    if status == 404:
        return ObjectNotFound(f"no object at {url}")
    if code in _DENIED_CODES or status in (401, 403):
        return StorePermissionDenied(f"{where}: Azure refused our credentials, {detail}")
    if status >= 500 or status in (408, 429) or code in ("ServerBusy", "OperationTimedOut"):
        return StoreUnavailable(f"{where}: Azure Blob Storage unavailable, {detail}")
    if code in _STORE_CODES:
        return StoreUnavailable(f"{where}: Azure refuses the container, {detail}")
    if 400 <= status < 500 and status != 409:
        # 400 (InvalidBlobOrBlock, InvalidHeaderValue ...), 411, 413, 414, ...: this request for
        # this object can never succeed, however often it is sent.
        return ObjectRejected(f"{where}: Azure refuses this object, {detail}")
    return StoreError(f"{where}: Azure answered {detail}")
