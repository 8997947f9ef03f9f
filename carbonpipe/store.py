"""Where records, ledger entries, baselines and reports live: one interface, three backends.

A store is addressed by a URI: a local folder (the default ``./carbon-artifacts``),
``s3://bucket/prefix`` or ``gs://bucket/prefix``. Every backend offers the same small set of
operations, and every write that must not clobber is conditional:

* ``put_if_absent``  create-only (local ``link()`` of a temp file, S3 ``If-None-Match: *``,
  GCS ``if_generation_match=0``); raises :class:`PreconditionFailed` if the key exists.
* ``replace``        compare-and-swap on the version read by ``get`` (local lock + version,
  S3 ``If-Match`` on the ETag, GCS ``if_generation_match``).
* ``get`` / ``list`` / ``delete`` / ``put_artifact`` (overwriting, for reports and plots).

Keys are ``/``-separated paths relative to the store's root.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Checked before anything else loads (``carbonpipe run``): it lives in a module of no imports.
from carbonpipe._checks import parse_store_uri
from carbonpipe.errors import (
    ObjectNotFound,
    PreconditionFailed,
    StorePermissionDenied,
    StoreUnavailable,
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
    if not isinstance(key, str) or not key or ".." in key.split("/") or not _KEY_RE.match(key):
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
        return f"{type(self).__name__}({self.uri!r})"


class LocalStore(Store):
    """A folder on the local disk (or a mounted volume) laid out like the object stores."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @staticmethod
    def _version(st: os.stat_result) -> str:
        # Each write lands through a fresh temp file, so the inode changes on every write.
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    def _write_temp(self, path: Path, data: bytes) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        except PermissionError as exc:
            raise StorePermissionDenied(f"cannot write under {path.parent}: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot write under {path.parent}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreUnavailable(f"cannot write {path}: {exc}") from exc
        return tmp

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            # link() never replaces an existing name: the create-if-absent primitive of POSIX.
            os.link(tmp, path)
        except FileExistsError as exc:
            raise PreconditionFailed(f"{self.url_for(key)} already exists") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {path}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return self._version(path.stat())

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        # flock serialises processes; the in-process lock serialises threads (flock is per
        # open file description, so two threads of one process would otherwise both pass).
        with self._locks_guard:
            tlock = self._locks.setdefault(str(path), threading.Lock())
        lock_path = path.parent / f".{path.name}.lock"
        with tlock:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def replace(
        self,
        key: str,
        data: bytes,
        *,
        if_version: str,
        content_type: str = "application/json",
    ) -> str:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            with self._locked(path):
                try:
                    current = self._version(path.stat())
                except FileNotFoundError as exc:
                    raise PreconditionFailed(
                        f"{self.url_for(key)} does not exist (expected version {if_version})"
                    ) from exc
                if current != if_version:
                    raise PreconditionFailed(
                        f"{self.url_for(key)} changed: version {current}, expected {if_version}"
                    )
                os.replace(tmp, path)
                return self._version(path.stat())
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def get(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no object at {self.url_for(key)}") from exc
        except PermissionError as exc:
            raise StorePermissionDenied(f"cannot read {path}: {exc}") from exc
        except IsADirectoryError as exc:
            raise ObjectNotFound(f"{self.url_for(key)} is a folder, not an object") from exc
        return StoredObject(key=key, data=data, version=self._version(st))

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the folder the prefix names, so partition pruning works on disk too.
        base_dir, _, _ = prefix.rpartition("/")
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            if not (rel_dir.startswith(prefix) or prefix.startswith(rel_dir)):
                dirnames[:] = []
                continue
            for name in filenames:
                if name.startswith("."):
                    continue  # temp files and lock files
                key = rel_dir + name
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise StorePermissionDenied(f"cannot delete {key}: {exc}") from exc
            raise StoreUnavailable(f"cannot delete {key}: {exc}") from exc

    def put_artifact(self, key: str, data: bytes, *, content_type: str) -> str:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreUnavailable(f"cannot write {path}: {exc}") from exc
        return str(path)

    def url_for(self, key: str) -> str:
        return str(self.root / key)


def open_store(uri: str | os.PathLike[str] | Store | None = None, **options: Any) -> Store:
    """Open the store a URI names: a folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.

    ``options`` go to the backend (``endpoint_url=``, ``client=`` ...). ``None`` opens the
    default local folder ``./carbon-artifacts``.
    """
    if isinstance(uri, Store):
        return uri
    scheme, bucket, prefix = parse_store_uri(uri)
    if scheme == "s3":
        from carbonpipe.store_s3 import S3Store

        return S3Store(bucket, prefix, **options)
    if scheme == "gs":
        from carbonpipe.store_gcs import GCSStore

        return GCSStore(bucket, prefix, **options)
    if options:
        raise TypeError(f"a local store takes no options, got {sorted(options)}")
    return LocalStore(bucket)
