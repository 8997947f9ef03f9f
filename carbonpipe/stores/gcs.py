"""The Google Cloud Storage backend, through google-cloud-storage.

An object's version is its generation: ``put_if_absent`` uploads with ``if_generation_match=0``
and ``replace`` with ``if_generation_match=<generation>``, and GCS answers 412 when the condition
fails. Uploads are simple (multipart, not resumable) because that is the request GCS and
fake-gcs-server check preconditions on. ``STORAGE_EMULATOR_HOST`` is honoured, with anonymous
credentials when none are configured. The library is imported on first use.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

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

T = TypeVar("T")

# The emulator ignores the project, but the client insists on one.
EMULATOR_PROJECT = "carbonpipe-emulator"


def _import_storage() -> Any:
    """Import google-cloud-storage, silencing api-core's note that grpcio-status is missing."""
    with warnings.catch_warnings(), needs_extra("gcs", "gs:// stores"):
        # Irrelevant to the JSON API we use, and an error under the test suite's filterwarnings.
        warnings.filterwarnings("ignore", "Please install grpcio-status", ImportWarning)
        from google.api_core import exceptions  # noqa: F401 - the module that warns
        from google.cloud import storage
    return storage


class GCSStore(Store):
    """Records and reports under ``gs://bucket/prefix``.

    Args:
        bucket: the bucket name.
        prefix: folder inside the bucket that every key is relative to ("" for the root).
        client: a ready ``google.cloud.storage.Client`` (then the connection options are ignored).
        project: the billing project; else the client library's default.
        endpoint_url: an emulator or private endpoint (``STORAGE_EMULATOR_HOST`` does the same);
            anonymous unless ``GOOGLE_APPLICATION_CREDENTIALS`` is set.
        connect_timeout_s: seconds to open a connection (at most ``timeout_s``).
        read_timeout_s: seconds to wait for each read of a response (at most ``timeout_s``).
        retry_timeout_s: total seconds spent retrying 429/5xx/connection failures (0: no
            retries; at most ``timeout_s``), kept small so that a store that is down fails fast
            and the spool takes over.
        timeout_s: the most seconds one operation may take, retries and reads included
            (``store_timeout_s``); past it the call raises :class:`StoreTimeout`.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        project: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        retry_timeout_s: float = 8.0,
        timeout_s: float | str = DEFAULT_STORE_TIMEOUT_S,
    ) -> None:
        prefix, uri = bucket_location("gs", bucket, prefix)
        if retry_timeout_s < 0:
            raise ValueError(f"retry_timeout_s must be >= 0, got {retry_timeout_s}")
        self.timeout_s = check_timeout(timeout_s)
        self.bucket = bucket
        self.prefix = prefix
        self.uri = uri
        self.project = project
        self.endpoint_url = endpoint_url
        self._timeout = (
            min(connect_timeout_s, self.timeout_s),
            min(read_timeout_s, self.timeout_s),
        )
        self._retry_timeout_s = min(retry_timeout_s, self.timeout_s)
        self._client = client
        self._owns_client = client is None  # close() leaves a caller's client alone
        self._client_lock = threading.Lock()
        self._retry_policy: Any = None

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``google.cloud.storage.Client``, created on first use."""
        if self._client is None:
            _import_storage()  # seconds of imports that must not count against the deadline
            with self._client_lock:
                if self._client is None:
                    self._client = self._call("connect to", "", self._make_client)
        return self._client

    def _make_client(self) -> Any:
        storage = _import_storage()

        if self.endpoint_url:
            credentials = None
            if not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()
            return storage.Client(
                project=self.project or EMULATOR_PROJECT,
                credentials=credentials,
                client_options={"api_endpoint": self.endpoint_url},
            )
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            # The library itself switches to anonymous credentials for the emulator.
            return storage.Client(project=self.project or EMULATOR_PROJECT)
        # An explicit None skips project inference, which object operations never need.
        return storage.Client(project=self.project)

    @property
    def _retry(self) -> Any:
        if self._retry_policy is None and self._retry_timeout_s > 0:
            from google.cloud.storage.retry import DEFAULT_RETRY

            self._retry_policy = DEFAULT_RETRY.with_timeout(self._retry_timeout_s)
        return self._retry_policy

    def _blob(self, key: str) -> Any:
        check_key(key)
        return self.client.bucket(self.bucket).blob(f"{self.prefix}/{key}" if self.prefix else key)

    def reopen_options(self) -> dict[str, str]:
        """Non-secret options another process needs to reopen this store (the spool keeps them)."""
        options = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.project:
            options["project"] = self.project
        options["timeout_s"] = f"{self.timeout_s:g}"  # a replay keeps the same deadline
        return options

    def _call(self, what: str, key: str, fn: Callable[[], T], *, bucket_404: bool = False) -> T:
        """Run one library call within ``timeout_s`` and translate its failures."""
        where = self.url_for(key) if key else self.uri
        try:
            return call_with_deadline(fn, self.timeout_s, lambda: f"cannot {what} {where}")
        except StoreError:
            raise
        except Exception as exc:
            if _timed_out(exc):
                raise StoreTimeout(
                    f"cannot {what} {where}: GCS did not answer in time ({type(exc).__name__})"
                ) from exc
            raise _translate(exc, what, where, bucket_404) from exc

    # -- the Store interface --------------------------------------------------------------

    def _upload(self, what: str, key: str, data: bytes, content_type: str, **cond: Any) -> str:
        blob = self._blob(key)
        self._call(
            what,
            key,
            lambda: blob.upload_from_string(
                data,
                content_type=content_type,
                timeout=self._timeout,
                retry=self._retry,
                **cond,
            ),
            bucket_404=True,
        )
        return str(blob.generation)

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        return self._upload("create", key, data, content_type, if_generation_match=0)

    def replace(
        self,
        key: str,
        data: bytes,
        *,
        if_version: str,
        content_type: str = "application/json",
    ) -> str:
        try:
            generation = int(if_version)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"if_version {if_version!r} is not a GCS generation; pass the version get() returned"
            ) from exc
        if generation <= 0:
            raise ValueError(f"if_version must be a positive GCS generation, got {if_version!r}")
        return self._upload("replace", key, data, content_type, if_generation_match=generation)

    def get(self, key: str) -> StoredObject:
        blob = self._blob(key)
        data = self._call(
            "read", key, lambda: blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
        )
        # The generation comes from the same response as the bytes, so they always agree.
        return StoredObject(key=key, data=data, version=str(blob.generation))

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        strip = len(base)

        def first_page() -> Iterator[Any]:
            return iter(
                self.client.list_blobs(
                    self.bucket, prefix=base + prefix, timeout=self._timeout, retry=self._retry
                )
            )

        # The iterator fetches further pages as it goes, so each step may fail like a request.
        blobs = self._call("list", prefix, first_page, bucket_404=True)
        while True:
            blob = self._call("list", prefix, lambda: next(blobs, None), bucket_404=True)
            if blob is None:
                return
            name = str(blob.name)[strip:]
            if name and not name.endswith("/"):  # skip console-made "folder" placeholders
                yield name

    def delete(self, key: str) -> None:
        blob = self._blob(key)
        try:
            self._call("delete", key, lambda: blob.delete(timeout=self._timeout, retry=self._retry))
        except ObjectNotFound:
            return

    def put_artifact(self, key: str, data: bytes, *, content_type: str) -> str:
        self._upload("write", key, data, content_type)
        return self.url_for(key)

    def close(self) -> None:
        if not self._owns_client:
            return
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()


def _timed_out(exc: BaseException) -> bool:
    """Whether a library failure is a timeout, directly or as the last cause retries gave up on."""
    import requests

    for _ in range(4):  # RetryError -> its cause -> ...
        if isinstance(exc, (requests.Timeout, TimeoutError)):
            return True
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException):
            return False
        exc = cause
    return False


def _first_line(exc: BaseException) -> str:
    """The server's own error message if the response carries one, else the exception's text."""
    response: Any = getattr(exc, "response", None)
    if response is not None:
        try:
            message = response.json()["error"]["message"]
        except Exception:  # not a JSON API error document
            message = None
        if isinstance(message, str) and message:
            return message[:300]
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _translate(exc: Exception, what: str, url: str, bucket_404: bool) -> StoreError:
    """Return the carbonpipe error for a google-cloud-storage failure."""
    import requests

    _import_storage()  # a user-supplied client may not have gone through it yet
    from google.api_core import exceptions as gx
    from google.auth import exceptions as ax

    where = f"cannot {what} {url}"
    if isinstance(exc, gx.RetryError) and isinstance(exc.cause, Exception):
        # Retries ran out: what matters is the last failure, which was a retryable one.
        inner = _translate(exc.cause, what, url, bucket_404)
        if isinstance(inner, StoreUnavailable):
            return StoreUnavailable(f"{inner} (gave up retrying)")
        return inner
    if isinstance(exc, gx.RetryError):
        return StoreUnavailable(f"{where}: GCS unavailable, {_first_line(exc)}")
    if isinstance(exc, gx.PreconditionFailed):
        return PreconditionFailed(f"{where}: precondition failed (412)")
    if isinstance(exc, gx.NotFound):
        if bucket_404:
            # Writes and listings cannot miss an object: their 404 means the bucket is missing.
            return StoreUnavailable(f"{where}: GCS answered 404, the bucket does not exist")
        return ObjectNotFound(f"no object at {url}")
    if isinstance(exc, (gx.Forbidden, gx.Unauthorized)):
        return StorePermissionDenied(
            f"{where}: GCS refused our credentials ({exc.code}): {_first_line(exc)}"
        )
    if isinstance(exc, ax.GoogleAuthError) and not isinstance(exc, ax.TransportError):
        # Missing credentials, a failed refresh, or a 401 that anonymous access cannot refresh.
        return StorePermissionDenied(
            f"{where}: no usable Google credentials ({type(exc).__name__})"
        )
    if isinstance(exc, (gx.TooManyRequests, gx.ServerError)):
        return StoreUnavailable(f"{where}: GCS unavailable ({exc.code}): {_first_line(exc)}")
    if isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            ConnectionError,
            TimeoutError,
            ax.TransportError,
        ),
    ):
        return StoreUnavailable(f"{where}: GCS unreachable ({type(exc).__name__})")
    if isinstance(exc, gx.ClientError) and not isinstance(exc, (gx.Conflict, gx.Cancelled)):
        if exc.code == 408 or "bucket name" in _first_line(exc).lower():
            # A timed-out request, or a bucket no key can be written to: the store, not the object.
            return StoreUnavailable(f"{where}: GCS answered {exc.code}: {_first_line(exc)}")
        # 400, 411, 413, 414, ...: this request for this object can never succeed as it is.
        return ObjectRejected(f"{where}: GCS refuses this object ({exc.code}): {_first_line(exc)}")
    if isinstance(exc, gx.GoogleAPICallError):
        return StoreError(f"{where}: GCS answered {exc.code}: {_first_line(exc)}")
    return StoreError(f"{where}: {type(exc).__name__}: {_first_line(exc)}")
