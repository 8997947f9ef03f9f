"""Where records, ledger entries, baselines and reports live: one interface, four backends.

A store is addressed by a URI: a local folder (the default ``./carbon-artifacts``),
``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``az://container/prefix``. Every backend
offers the same small set of operations, and every write that must not clobber is conditional:

* ``put_if_absent``  create-only (local ``link()`` of a temp file, S3 and Azure
  ``If-None-Match: *``, GCS ``if_generation_match=0``); raises :class:`PreconditionFailed` if
  the key exists.
* ``replace``        compare-and-swap on the version read by ``get`` (local lock + version,
  S3 and Azure ``If-Match`` on the ETag, GCS ``if_generation_match``).
* ``get`` / ``list`` / ``delete`` / ``put_artifact`` (overwriting, for reports and plots).

Keys are ``/``-separated paths relative to the store's root.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from dataclasses import dataclass

from carbonpipe.errors import (
    ObjectNotFound,
)

_KEY_RE = re.compile(r"^[A-Za-z0-9._=\-]+(/[A-Za-z0-9._=:@+\-]+)*$")


@dataclass(frozen=True)
class StoredObject:
    """An object read from a store, with the version a later ``replace`` must match."""

    key: str
    data: bytes
    version: str


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``ValueError`` naming it."""
    # fullmatch, not match: "$" alone would let a key that ends in a newline through.
    if not isinstance(key, str) or not key or ".." in key.split("/") or not _KEY_RE.fullmatch(key):
        raise ValueError(
            f"store key {key!r} is invalid: use '/'-separated parts of letters, digits and ._=-"
        )
    return key


def bucket_location(scheme: str, bucket: str, prefix: str) -> tuple[str, str]:
    """Validate an object store's bucket and prefix; return (prefix, URI) as the backends keep them."""
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise ValueError(f"{scheme} bucket {bucket!r} is invalid: give a bucket name without '/'")
    prefix = (prefix or "").strip("/")
    if prefix:
        check_key(prefix)
    uri = f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"
    return prefix, uri


class Store(abc.ABC):
    """The operations every backend implements; see the module docstring."""

    uri: str

    @abc.abstractmethod
    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        """Create ``key`` with ``data`` unless it exists; return the new version."""

    @abc.abstractmethod
    def replace(
        self,
        key: str,
        data: bytes,
        *,
        if_version: str,
        content_type: str = "application/json",
    ) -> str:
        """Overwrite ``key`` only if its current version is ``if_version``; return the new one."""

    @abc.abstractmethod
    def get(self, key: str) -> StoredObject:
        """Read ``key``; raise :class:`ObjectNotFound` if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with ``prefix``, in lexicographic order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    @abc.abstractmethod
    def put_artifact(self, key: str, data: bytes, *, content_type: str) -> str:
        """Write a report or plot at ``key``, overwriting; return the object's URL."""

    def url_for(self, key: str) -> str:
        """Return the URI of ``key`` inside this store."""
        return f"{self.uri.rstrip('/')}/{key}"

    def exists(self, key: str) -> bool:
        """Return whether ``key`` exists."""
        try:
            self.get(key)
        except ObjectNotFound:
            return False
        return True

    def reopen_options(self) -> dict[str, str]:
        """Non-secret options another process needs to reopen this store from its URI."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release clients; the default holds nothing."""

    def __repr__(self) -> str:
        from carbonpipe.stores.redact import redact

        return f"{type(self).__name__}({redact(self.uri)!r})"
