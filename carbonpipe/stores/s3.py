"""The S3 backend: AWS S3 and S3-compatible stores (MinIO, Ceph, moto) through boto3.

Conditional writes are S3's own: ``put_if_absent`` is a PutObject with ``If-None-Match: *`` and
``replace`` a PutObject with ``If-Match: <etag>``; a lost condition (412) raises
:class:`PreconditionFailed`. Credentials come from the SDK's normal chain and never appear in
an error message. boto3 is imported on first use, so opening a store costs nothing.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

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

# Backoff jitter from the OS, not the global random state (which a user's program, or a
# property-testing library, may be relying on).
_JITTER = random.SystemRandom()

T = TypeVar("T")

_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "UnauthorizedAccess",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# 4xx answers about the bucket or the request's signing, not the object: every key would get
# them, so the store as a whole is unusable until someone fixes its configuration.
_STORE_CODES = frozenset(
    {
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
        "InvalidBucketName",
        "InvalidBucketState",
        "MissingSecurityHeader",
        "PermanentRedirect",
        "TemporaryRedirect",
    }
)
# Real S3 answers 409 when two conditional writes to one key are in flight at once; the
# request can simply be sent again, and the retry then wins or gets an honest 412.
_CONFLICT_CODE = "ConditionalRequestConflict"
_CONFLICT_ATTEMPTS = 4
_CONFLICT_BACKOFF_S = 0.1


class S3Store(Store):
    """Records and reports under ``s3://bucket/prefix``.

    Args:
        bucket: the bucket name.
        prefix: folder inside the bucket that every key is relative to ("" for the root).
        endpoint_url: an S3-compatible endpoint (MinIO, Ceph, a test server); boto3 also honours
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. Custom endpoints use path-style
            addressing.
        client: a ready boto3 S3 client (then the other connection options are ignored).
        region_name: the bucket's region; else the SDK's chain.
        connect_timeout_s: seconds to open a connection (at most ``timeout_s``).
        read_timeout_s: seconds to wait for each read of a response (at most ``timeout_s``).
        max_attempts: attempts per request, first included (SDK "standard" retry mode), kept
            small so that a store that is down fails fast and the spool takes over.
        timeout_s: the most seconds one operation may take, attempts and reads included
            (``store_timeout_s``); past it the call raises :class:`StoreTimeout`.
        **client_kwargs: passed to ``boto3.session.Session().client("s3", ...)``; a ``config``
            is merged over ours.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
        region_name: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        max_attempts: int = 3,
        timeout_s: float | str = DEFAULT_STORE_TIMEOUT_S,
        **client_kwargs: Any,
    ) -> None:
        prefix, uri = bucket_location("s3", bucket, prefix)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.timeout_s = check_timeout(timeout_s)
        self.bucket = bucket
        self.prefix = prefix
        self.uri = uri
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._connect_timeout_s = min(connect_timeout_s, self.timeout_s)
        self._read_timeout_s = min(read_timeout_s, self.timeout_s)
        self._max_attempts = max_attempts
        self._client_kwargs = client_kwargs
        self._client = client
        self._owns_client = client is None  # close() leaves a caller's client alone
        self._client_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use (no I/O happens in ``__init__``)."""
        if self._client is None:
            # boto3's default session is not thread-safe; each store builds its own.
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        with needs_extra("s3", "s3:// stores"):
            from botocore.config import Config

        endpoint = (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        config = Config(
            connect_timeout=self._connect_timeout_s,
            read_timeout=self._read_timeout_s,
            # botocore's "max_attempts" counts retries only; "total_max_attempts" is what we mean.
            retries={"total_max_attempts": self._max_attempts, "mode": "standard"},
            max_pool_connections=32,
            # MinIO, Ceph and test servers rarely resolve bucket.host names.
            s3={"addressing_style": "path"} if endpoint else None,
        )
        kwargs = dict(self._client_kwargs)
        user_config = kwargs.pop("config", None)
        if user_config is not None:
            config = config.merge(user_config)
        try:
            return _new_session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region_name,
                config=config,
                **kwargs,
            )
        except Exception as exc:
            raise StoreError(
                f"cannot create an S3 client for {self.uri}: {_describe(exc)}"
            ) from exc

    def reopen_options(self) -> dict[str, str]:
        """Non-secret options another process needs to reopen this store (the spool keeps them)."""
        options = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.region_name:
            options["region_name"] = self.region_name
        options["timeout_s"] = f"{self.timeout_s:g}"  # a replay keeps the same deadline
        return options

    def _full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Callable[[], T], *, conditional: bool = False) -> T:
        """Run one SDK call within ``timeout_s`` and translate its failures into carbonpipe errors."""
        with needs_extra("s3", "s3:// stores"):
            import boto3  # noqa: F401 - imported here, not on the clock of the call's deadline
            from botocore import exceptions as bx

        try:
            return call_with_deadline(
                fn, self.timeout_s, lambda: f"cannot {what} {self.url_for(key)}"
            )
        except bx.ClientError as exc:
            _raise_for_client_error(
                exc, what, self.url_for(key), self.bucket, conditional=conditional
            )
        except (
            bx.NoCredentialsError,
            bx.PartialCredentialsError,
            bx.CredentialRetrievalError,
        ) as exc:
            raise StorePermissionDenied(
                f"cannot {what} {self.url_for(key)}: no usable AWS credentials ({type(exc).__name__})"
            ) from exc
        except (bx.ConnectTimeoutError, bx.ReadTimeoutError) as exc:
            raise StoreTimeout(
                f"cannot {what} {self.url_for(key)}: S3 did not answer in time ({_describe(exc)})"
            ) from exc
        except (bx.ConnectionError, bx.HTTPClientError) as exc:
            raise StoreUnavailable(
                f"cannot {what} {self.url_for(key)}: S3 unreachable ({_describe(exc)})"
            ) from exc
        except bx.BotoCoreError as exc:
            raise StoreError(f"cannot {what} {self.url_for(key)}: {_describe(exc)}") from exc

    # -- the Store interface --------------------------------------------------------------

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        return self._conditional_put("create", key, data, content_type, IfNoneMatch="*")

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
        try:
            etag = self._conditional_put("replace", key, data, content_type, IfMatch=if_version)
        except ObjectNotFound as exc:
            # S3 answers If-Match on a missing key with 404; to the caller the swap just lost.
            raise PreconditionFailed(
                f"{self.url_for(key)} does not exist (expected version {if_version})"
            ) from exc
        return etag

    def _conditional_put(
        self, what: str, key: str, data: bytes, content_type: str, **condition: str
    ) -> str:
        """PutObject under ``condition`` (IfNoneMatch / IfMatch); return the new ETag."""
        full = self._full_key(key)

        def put() -> str:
            response = self.client.put_object(
                Bucket=self.bucket, Key=full, Body=data, ContentType=content_type, **condition
            )
            return str(response["ETag"])

        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                return self._call(what, key, put, conditional=True)
            except _ConditionalConflict:
                if attempt + 1 < _CONFLICT_ATTEMPTS:
                    time.sleep(_JITTER.uniform(0.5, 1.0) * _CONFLICT_BACKOFF_S * 2**attempt)
        raise PreconditionFailed(
            f"cannot {what} {self.url_for(key)}: S3 kept answering {_CONFLICT_CODE} "
            f"after {_CONFLICT_ATTEMPTS} attempts"
        )

    def get(self, key: str) -> StoredObject:
        full = self._full_key(key)

        def read() -> StoredObject:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            with response["Body"] as body:
                data = body.read()
            return StoredObject(key=key, data=data, version=str(response["ETag"]))

        return self._call("read", key, read)

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        strip = len(base)

        def pages() -> Iterator[dict[str, Any]]:
            paginator = self.client.get_paginator("list_objects_v2")
            return iter(paginator.paginate(Bucket=self.bucket, Prefix=base + prefix))

        it = self._call("list", prefix, pages)
        while True:
            page = self._call("list", prefix, lambda: next(it, None))
            if page is None:
                return
            for item in page.get("Contents", ()):
                name = str(item["Key"])[strip:]
                if name and not name.endswith("/"):  # skip console-made "folder" markers
                    yield name

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        # DeleteObject on a missing key succeeds on S3, which is what the interface wants.
        self._call(
            "delete",
            key,
            lambda: self.client.delete_object(Bucket=self.bucket, Key=full),
        )

    def put_artifact(self, key: str, data: bytes, *, content_type: str) -> str:
        full = self._full_key(key)
        self._call(
            "write",
            key,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=full, Body=data, ContentType=content_type
            ),
        )
        return self.url_for(key)

    def close(self) -> None:
        if not self._owns_client:
            return
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()


_loader_lock = threading.Lock()
_shared_loader: Any = None


def _new_session() -> Any:
    """A fresh boto3 session (credentials resolved anew) that shares parsed service models."""
    with needs_extra("s3", "s3:// stores"):
        import boto3
        import botocore.session

    global _shared_loader
    core = botocore.session.get_session()
    # Parsing the S3 model costs ~0.1 s per session; the loader's cache is read-only once filled.
    with _loader_lock:
        if _shared_loader is None:
            _shared_loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _shared_loader)
    return boto3.session.Session(botocore_session=core)


class _ConditionalConflict(Exception):
    """S3 answered 409 ConditionalRequestConflict: send the same request again."""


def _describe(exc: BaseException) -> str:
    # botocore quotes the endpoint URL, which may carry userinfo.
    return redact(f"{type(exc).__name__}: {exc}")


def _raise_for_client_error(
    exc: Any, what: str, url: str, bucket: str, *, conditional: bool
) -> NoReturn:
    """Raise the carbonpipe error for a botocore ``ClientError``."""
    error = exc.response.get("Error", {}) or {}
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = str(error.get("Message", "")) or code
    detail = f"{code or 'HTTP ' + str(status)} ({status}): {message}"
    if conditional and (code == _CONFLICT_CODE or status == 409):
        raise _ConditionalConflict(detail) from exc
    if status == 412 or code == "PreconditionFailed":
        raise PreconditionFailed(f"cannot {what} {url}: {detail}") from exc
    if code == "NoSuchBucket":
        # Not the object's absence: the store itself is missing, so writes must be spooled.
        raise StoreUnavailable(f"cannot {what} {url}: bucket {bucket!r} does not exist") from exc
    if code in _NOT_FOUND_CODES or status == 404:
        raise ObjectNotFound(f"no object at {url}") from exc
    if code in _DENIED_CODES or status in (401, 403):
        raise StorePermissionDenied(
            f"cannot {what} {url}: S3 refused our credentials, {detail}"
        ) from exc
    if code in _UNAVAILABLE_CODES or status >= 500 or status in (408, 429):
        raise StoreUnavailable(f"cannot {what} {url}: S3 unavailable, {detail}") from exc
    if code in _STORE_CODES:
        raise StoreUnavailable(f"cannot {what} {url}: S3 refuses the bucket, {detail}") from exc
    if 400 <= status < 500 and status != 409:
        # 400 (KeyTooLongError, InvalidArgument, ...), 411, 413, 414, ...: this request for this
        # object can never succeed, however often it is sent.
        raise ObjectRejected(f"cannot {what} {url}: S3 refuses this object, {detail}") from exc
    raise StoreError(f"cannot {what} {url}: {detail}") from exc
