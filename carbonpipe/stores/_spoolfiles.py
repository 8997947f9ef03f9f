"""The spool's file primitives: its folder names, atomic writes, and the time stamps it keeps.

Shared by :mod:`carbonpipe.stores.spool` and :mod:`carbonpipe.stores.quarantine`, so neither
imports the other's internals.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path

from carbonpipe._private import ensure_private_dir, private_temp_file

PENDING, CONFLICTS, INVALID, TMP, QUARANTINE = (
    "pending",
    "conflicts",
    "invalid",
    "tmp",
    "quarantine",
)

# Why an item sits in the quarantine (carbonpipe.stores.quarantine).
REJECTED, UNREADABLE, UNTRUSTED, UNKNOWN = "rejected", "unreadable", "untrusted", "unknown"
DEFAULT_SPOOL_DIR = Path("~/.cache/carbonpipe/spool")


def spool_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the spool folder: ``path``, else ``CARBONPIPE_SPOOL_DIR``, else the home cache."""
    chosen = (
        path if path is not None else os.environ.get("CARBONPIPE_SPOOL_DIR") or DEFAULT_SPOOL_DIR
    )
    return Path(chosen).expanduser().absolute()


def private_spool_dir(path: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """The spool folder, created 0700 (unless ``create`` is false: readers create nothing);
    :class:`~carbonpipe.errors.UnsafeFolder` if others could write into it."""
    return ensure_private_dir(
        spool_dir(path), what="spool folder", env="CARBONPIPE_SPOOL_DIR", create=create
    )


def anything_pending(path: str | os.PathLike[str] | None = None) -> bool:
    """Whether the spool's ``pending/`` folder holds any envelope: one directory listing, no
    envelope read, no folder check (the replay that follows does those)."""
    try:
        with os.scandir(spool_dir(path) / PENDING) as found:
            return any(e.name.endswith(".json") for e in found)
    except OSError:
        return False


def utc_now() -> str:
    """The current UTC time as ISO-8601 to the second, with a ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut (where the filesystem allows it)."""
    # Some filesystems refuse to fsync a folder, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(folder: Path, name: str, payload: bytes) -> Path:
    """Write ``folder/name`` so that readers see the whole file or nothing."""
    tmp_dir = folder.parent / TMP
    folder.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = private_temp_file(tmp_dir, f"{name[:80]}.", ".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        target = folder / name
        os.replace(tmp, target)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def move_unique(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` under its name, never over a different file; return the target.

    A file of the same name and the same bytes is replaced (spool entries are named by their
    digest, so that is the same object); a different one makes the name ``<stem>-<n><suffix>``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 0
    while target.exists() and not _same_bytes(path, target):
        n += 1
        target = folder / f"{path.stem}-{n}{path.suffix}"
    os.replace(path, target)
    fsync_dir(folder)
    return target


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False
