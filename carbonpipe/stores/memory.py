"""An in-memory store, for tests of the packages above the stores (as httpx ships MockTransport).

It keeps every per-method contract of :class:`~carbonpipe.stores.base.Store`: create-if-absent,
compare-and-swap on a version, lexicographic listing, overwriting artifacts, keys checked the
same way. The backends themselves are tested against real servers (moto, fake-gcs-server), not
against this. Objects live as long as the instance; nothing is written anywhere.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

from carbonpipe.errors import ObjectNotFound, PreconditionFailed
from carbonpipe.stores.base import Store, StoredObject, check_key


class MemoryStore(Store):
    """A store held in a dict under one lock; thread-safe, versions are a counter."""

    def __init__(self, name: str = "test") -> None:
        self.uri = f"memory://{name}"
        self._objects: dict[str, tuple[bytes, str, str]] = {}  # key -> (data, version, type)
        self._lock = threading.Lock()
        self._versions = itertools.count(1)

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        check_key(key)
        with self._lock:
            if key in self._objects:
                raise PreconditionFailed(f"{self.url_for(key)} already exists")
            return self._put(key, data, content_type)

    def replace(
        self,
        key: str,
        data: bytes,
        *,
        if_version: str,
        content_type: str = "application/json",
    ) -> str:
        check_key(key)
        with self._lock:
            current = self._objects.get(key)
            if current is None or current[1] != if_version:
                raise PreconditionFailed(
                    f"{self.url_for(key)} is not at version {if_version!r}"
                    if current is not None
                    else f"{self.url_for(key)} does not exist"
                )
            return self._put(key, data, content_type)

    def get(self, key: str) -> StoredObject:
        check_key(key)
        with self._lock:
            found = self._objects.get(key)
        if found is None:
            raise ObjectNotFound(self.url_for(key))
        return StoredObject(key, found[0], found[1])

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            keys = sorted(k for k in self._objects if k.startswith(prefix))
        yield from keys

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def put_artifact(self, key: str, data: bytes, *, content_type: str) -> str:
        check_key(key)
        with self._lock:
            self._put(key, data, content_type)
        return self.url_for(key)

    def _put(self, key: str, data: bytes, content_type: str) -> str:
        version = str(next(self._versions))
        self._objects[key] = (bytes(data), version, content_type)
        return version
