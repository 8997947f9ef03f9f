"""The spool's quarantine: entries that can never be delivered, kept with their reason.

An entry lands here when its store refuses that one object for good
(:class:`~carbonpipe.errors.ObjectRejected`: a key the filesystem cannot hold, a 400 from S3 or
GCS), when replay cannot read the envelope at all, or when its seal does not verify (reason
``untrusted``: planted or altered, see :mod:`carbonpipe.stores._spoolkey`). It then no longer
stands in front of the entries behind it, and it is never deleted: ``carbonpipe flush`` lists
it and exits 1 while anything is here, and ``carbonpipe flush --retry-quarantined`` puts it
back in ``pending/`` (an untrusted entry is quarantined again at once).
The layout::

    <spool>/quarantine/<name>               the entry exactly as it was in pending/
    <spool>/quarantine/<name>.reason.json   {reason, store, key, error, quarantined_at}

The entry is moved first and its reason written second, so a crash in between leaves a listed
entry whose reason reads "unknown", never a reason without its entry.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carbonpipe.stores._spoolfiles import (
    INVALID,
    PENDING,
    QUARANTINE,
    REJECTED,
    UNKNOWN,
    UNREADABLE,
    UNTRUSTED,
    move_unique,
    utc_now,
    write_atomic,
)
from carbonpipe.stores.redact import redact

QUARANTINE_SCHEMA = "carbonpipe.quarantine/1"
REASON_SUFFIX = ".reason.json"
# Why an entry is here (REJECTED, UNREADABLE, UNTRUSTED, UNKNOWN, kept in _spoolfiles): its store
# refused it for good, its envelope cannot be read, or its seal does not verify (planted or
# altered: see carbonpipe.stores._spoolkey).
__all__ = [
    "QUARANTINE_SCHEMA",
    "REASON_SUFFIX",
    "REJECTED",
    "UNKNOWN",
    "UNREADABLE",
    "UNTRUSTED",
    "QuarantinedItem",
    "adopt_invalid",
    "quarantine",
    "quarantined",
    "release",
]


@dataclass(frozen=True)
class QuarantinedItem:
    """One entry in the quarantine and why it is there."""

    path: Path
    reason: str
    store_uri: str
    key: str
    error: str
    quarantined_at: str

    @property
    def reason_path(self) -> Path:
        """The reason file beside the entry."""
        return self.path.with_name(self.path.name + REASON_SUFFIX)

    def to_dict(self) -> dict[str, str]:
        """JSON-ready fields (``carbonpipe flush --json``)."""
        return {
            "path": str(self.path),
            "reason_file": str(self.reason_path),
            "reason": self.reason,
            "store": self.store_uri,
            "key": self.key,
            "error": self.error,
            "quarantined_at": self.quarantined_at,
        }


def quarantine(
    root: Path, path: Path, *, reason: str, store_uri: str, key: str, error: str
) -> QuarantinedItem:
    """Move the entry at ``path`` into ``<root>/quarantine/`` and write its reason beside it.

    Raises ``OSError`` if the entry cannot be moved (it then stays where it was).
    """
    target = move_unique(path, root / QUARANTINE)
    item = QuarantinedItem(
        path=target,
        reason=reason,
        store_uri=redact(store_uri),
        key=key,
        error=redact(error),
        quarantined_at=utc_now(),
    )
    body = {"schema": QUARANTINE_SCHEMA, **item.to_dict()}
    del body["path"], body["reason_file"]
    with contextlib.suppress(OSError):  # the entry is safe; a missing reason reads "unknown"
        write_atomic(
            target.parent,
            item.reason_path.name,
            json.dumps(body, indent=2, allow_nan=False).encode(),
        )
    return item


def _entry_paths(folder: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    present = set(names)
    return [
        folder / name
        for name in names
        if not name.startswith(".")
        # A reason file is one whose entry is present; anything else is an entry.
        and not (name.endswith(REASON_SUFFIX) and name[: -len(REASON_SUFFIX)] in present)
        and (folder / name).is_file()
    ]


def _read_reason(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path.with_name(path.name + REASON_SUFFIX)).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def quarantined(root: Path) -> list[QuarantinedItem]:
    """Every entry in ``<root>/quarantine/``, by name, with its reason (``unknown`` if none)."""
    items = []
    for path in _entry_paths(root / QUARANTINE):
        why = _read_reason(path)
        items.append(
            QuarantinedItem(
                path=path,
                reason=str(why.get("reason") or UNKNOWN),
                store_uri=str(why.get("store", "")),
                key=str(why.get("key", "")),
                error=str(why.get("error") or "no reason file beside the entry"),
                quarantined_at=str(why.get("quarantined_at", "")),
            )
        )
    return items


def adopt_invalid(root: Path) -> list[QuarantinedItem]:
    """Quarantine what earlier versions set aside in ``<root>/invalid/``, so flush reports it."""
    adopted = []
    for path in _entry_paths(root / INVALID):
        with contextlib.suppress(FileNotFoundError):  # another replay adopted it first
            adopted.append(
                quarantine(
                    root,
                    path,
                    reason=UNREADABLE,
                    store_uri="",
                    key="",
                    error="unreadable spool envelope, set aside in invalid/ by an earlier replay",
                )
            )
    return adopted


def release(root: Path, *, store_uri: str | None = None) -> int:
    """Move quarantined entries back to ``pending/`` for another replay; return how many.

    With ``store_uri``, only that store's entries go back (unreadable ones name no store).
    Each entry's reason file is removed once the entry is back in pending: if the entry is
    refused again, the replay writes a fresh one.
    """
    released = 0
    for item in quarantined(root):
        if store_uri is not None and item.store_uri != redact(store_uri):
            continue
        try:
            moved = move_unique(item.path, root / PENDING)
        except FileNotFoundError:
            continue  # released by a concurrent flush
        with contextlib.suppress(OSError):
            os.utime(moved)  # a fresh mtime puts it behind the entries already waiting
        with contextlib.suppress(OSError):
            os.unlink(item.reason_path)
        released += 1
    return released
