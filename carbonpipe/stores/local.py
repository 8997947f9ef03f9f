"""The local-folder backend: create-if-absent by ``link()``, compare-and-swap under a file lock.

The default store (``./carbon-artifacts``), and the one tests and the demo use; it keeps the
same per-method contracts as the object-store backends (:mod:`carbonpipe.stores.base`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from carbonpipe.errors import (
    KeyOutsideStore,
    ObjectNotFound,
    ObjectRejected,
    PreconditionFailed,
    StoreError,
    StorePermissionDenied,
    StoreUnavailable,
)
from carbonpipe.stores.base import Store, StoredObject, check_key

# Checked before anything else loads (``carbonpipe run``): it lives in a module of no imports.

# The filesystem refuses the name itself (too long, invalid or unencodable here): no retry of
# the same key can succeed, while other keys still can.
_REJECTED_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})


def _os_error(what: str, path: Path, exc: OSError) -> StoreError:
    """The carbonpipe error for an ``OSError`` met while writing ``path``."""
    if exc.errno in _REJECTED_ERRNOS:
        return ObjectRejected(
            f"cannot {what} {path}: the filesystem refuses the name ({exc.strerror})"
        )
    if isinstance(exc, PermissionError):
        return StorePermissionDenied(f"cannot {what} {path}: {exc}")
    return StoreUnavailable(f"cannot {what} {path}: {exc}")


class LocalStore(Store):
    """A folder on the local disk (or a mounted volume) laid out like the object stores."""

    def __init__(self, root: str | os.PathLike[str], prefix: str = "", **options: Any) -> None:
        if options:
            raise TypeError(f"a local store takes no options, got {sorted(options)}")
        if prefix:  # a URI's folder is the whole root; only object stores have a prefix
            raise TypeError(f"a local store takes no prefix, got {prefix!r}")
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _path(self, key: str) -> Path:
        """The file of ``key``; :class:`KeyOutsideStore` for one that would land outside the root."""
        if not isinstance(key, str) or key.startswith("/") or ".." in key.split("/"):
            raise KeyOutsideStore(f"store key {key!r} would resolve outside {self.root}")
        path = self.root / check_key(key)
        # A symlink inside the folder must not carry a read or a write out of it either.
        if not path.resolve().is_relative_to(self.root):
            raise KeyOutsideStore(
                f"store key {key!r} resolves to {path.resolve()}, outside {self.root} "
                "(through a symlink); refused"
            )
        return path

    @staticmethod
    def _version(st: os.stat_result) -> str:
        # Each write lands through a fresh temp file, so the inode changes on every write.
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    def _write_temp(self, path: Path, data: bytes) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Not mkstemp (always 0600): records are shared with teammates who can read the
            # folder, so the mode is 0666 less the umask, as any file the user writes.
            tmp = str(path.parent / f".tmp-{secrets.token_hex(8)}.part")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise _os_error("write under", path.parent, exc) from exc
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
            raise _os_error("create", path, exc) from exc
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
        except OSError as exc:
            if exc.errno in _REJECTED_ERRNOS:  # a name this filesystem cannot hold is not here
                raise ObjectNotFound(f"no object at {self.url_for(key)} ({exc})") from exc
            raise
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
            raise _os_error("write", path, exc) from exc
        return str(path)

    def url_for(self, key: str) -> str:
        return str(self.root / key)
