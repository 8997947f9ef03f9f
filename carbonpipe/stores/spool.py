"""Nothing is lost: objects a store could not take wait in a local spool until ``replay``.

``deliver`` (:mod:`carbonpipe.stores.deliver`, re-exported here) writes create-if-absent. When
the store is down, slow or refuses us, the object goes into the spool instead, and ``replay`` (run by the tracker at start and at exit, and by
``carbonpipe flush``) delivers it later to the store it was meant for. The layout::

    <spool>/pending/<digest>.json     one envelope per object: target store URI, key,
                                      content type, base64 bytes (written by temp + rename)
    <spool>/conflicts/<digest>.json   bytes that met different bytes under the same key
    <spool>/quarantine/<name>         entries that can never be delivered, each with a
                                      <name>.reason.json (:mod:`carbonpipe.stores.quarantine`)
    <spool>/tmp/                      half-written envelopes

The digest covers (store, key, bytes), so spooling the same object twice leaves one file.
Replays claim each envelope with ``flock`` before delivering it, so several processes can
replay one spool at once and each object is delivered exactly once. Envelopes hold store
URIs and non-secret options only; credentials are never written. The spool folder must be
this user's alone (created 0700; :class:`UnsafeFolder` otherwise) and every envelope is sealed
with this spool's key (:mod:`carbonpipe.stores._spoolkey`): one whose seal does not verify was
planted or altered, and is quarantined, never delivered.

Each entry is replayed on its own, so one entry never holds back another. A store that is
unavailable (down, throttling, timing out, refusing our credentials) is not tried again for
the rest of that replay, and all its entries wait. An entry the store refuses for good
(:class:`ObjectRejected`) and an envelope that cannot be read go to the quarantine; any other
failure keeps the entry for the next replay and goes on with the next one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from carbonpipe.errors import (
    ObjectRejected,
    StorePermissionDenied,
    StoreUnavailable,
)
from carbonpipe.stores._spoolfiles import (
    CONFLICTS,
    DEFAULT_SPOOL_DIR,
    INVALID,
    PENDING,
    QUARANTINE,
    TMP,
    private_spool_dir,
    spool_dir,
)
from carbonpipe.stores._spoolkey import seal_problem
from carbonpipe.stores.base import Store, check_key
from carbonpipe.stores.deliver import (
    ENVELOPE_SCHEMA,
    Delivery,
    _create,
    _keep_conflict,
    deliver,
)
from carbonpipe.stores.opener import open_store
from carbonpipe.stores.quarantine import (
    REJECTED,
    UNREADABLE,
    UNTRUSTED,
    QuarantinedItem,
    adopt_invalid,
    quarantine,
    release,
)
from carbonpipe.stores.quarantine import quarantined as _quarantined
from carbonpipe.stores.redact import redact

log = logging.getLogger(__name__)

__all__ = [
    "CONFLICTS",
    "DEFAULT_SPOOL_DIR",
    "ENVELOPE_SCHEMA",
    "INVALID",
    "PENDING",
    "QUARANTINE",
    "TMP",
    "Delivery",
    "QuarantinedItem",
    "ReplayReport",
    "SpooledItem",
    "deliver",
    "pending",
    "quarantined",
    "replay",
    "spool_dir",
]
# A store that cannot be used right now: its entries wait, and the replay stops trying it.
_STORE_DOWN = (StoreUnavailable, StorePermissionDenied, TimeoutError, ConnectionError)


@dataclass(frozen=True)
class ReplayReport:
    """What one ``replay`` did: counts, and a message per object it could not deliver.

    ``remaining`` counts the entries still pending afterwards and ``quarantined`` lists every
    entry in the quarantine afterwards, whatever their store; ``newly_quarantined`` counts those
    this replay put there, and ``released`` those it took out to retry them.
    """

    delivered: int
    duplicates: int
    remaining: int
    failed: list[str] = field(default_factory=list)
    conflicts: int = 0
    quarantined: list[QuarantinedItem] = field(default_factory=list)
    newly_quarantined: int = 0
    released: int = 0


@dataclass(frozen=True)
class SpooledItem:
    """One object waiting in the spool."""

    path: Path
    store_uri: str
    key: str
    content_type: str
    size_bytes: int
    sha256: str
    spooled_at: str
    error: str

    def read_data(self) -> bytes:
        """Return the object's bytes."""
        return _decode(json.loads(self.path.read_bytes()))[1]


# The public functions take a ``spool_dir`` argument, which hides the function of that name.
_resolve = spool_dir


def _decode(envelope: Any) -> tuple[dict[str, Any], bytes]:
    """Validate an envelope and return it with its bytes; raise ``ValueError`` if unusable."""
    if not isinstance(envelope, dict) or envelope.get("schema") != ENVELOPE_SCHEMA:
        raise ValueError(f"not a {ENVELOPE_SCHEMA} envelope")
    for name in ("store", "key", "content_type", "data_b64"):
        if not isinstance(envelope.get(name), str):
            raise ValueError(f"envelope field {name!r} is missing or not a string")
    try:
        data = base64.b64decode(envelope["data_b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"envelope bytes are not valid base64: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != envelope.get("sha256", hashlib.sha256(data).hexdigest()):
        raise ValueError("envelope bytes do not match their sha256")
    options = envelope.setdefault("store_options", {})
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        raise ValueError("envelope field 'store_options' must map strings to strings")
    check_key(envelope["key"])
    return envelope, data


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[BinaryIO | None]:
    """Lock ``path`` for this process, or yield ``None`` if another replay holds it or it is gone."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - the lock must live as long as the handle
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        # The file may have been delivered and unlinked between our open() and our lock.
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        yield fh if same else None
    finally:
        fh.close()  # closing drops the lock


def _pending_paths(root: Path) -> list[Path]:
    """Envelopes waiting in the spool, oldest first."""
    try:
        candidates = list((root / PENDING).glob("*.json"))
    except OSError:
        return []
    entries = []
    for path in candidates:
        try:
            entries.append((path.stat().st_mtime_ns, path.name, path))
        except FileNotFoundError:
            continue  # delivered by a concurrent replay while we listed
    return [path for _, _, path in sorted(entries)]


@dataclass
class _Replay:
    """The running state of one ``replay`` call."""

    root: Path
    store: Store | None
    opened: dict[str, Store] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    delivered: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    failed: list[str] = field(default_factory=list)

    def target(self, uri: str, options: dict[str, str]) -> Store | None:
        """The store an envelope names, opened once per replay; None if it cannot be opened."""
        if self.store is not None:
            return self.store
        if uri not in self.opened:
            try:
                self.opened[uri] = open_store(uri, **options)
            except Exception as exc:
                self.broken[uri] = redact(f"cannot open {uri}: {type(exc).__name__}: {exc}")
                self.failed.append(self.broken[uri])
                return None
        return self.opened[uri]

    def quarantine(self, path: Path, reason: str, uri: str, key: str, error: str) -> None:
        """Move an entry that can never be delivered out of the way, with its reason."""
        try:
            item = quarantine(self.root, path, reason=reason, store_uri=uri, key=key, error=error)
        except OSError as exc:
            self.failed.append(redact(f"{path.name}: {error}; cannot quarantine it ({exc})"))
            log.error("cannot quarantine spool entry %s (%s): %s", path, error, exc)
            return
        self.quarantined += 1
        self.failed.append(redact(f"{path.name}: {error}; quarantined as {item.path}"))
        log.error(
            "spool entry %s can never be delivered (%s); quarantined as %s with %s "
            "(`carbonpipe flush --retry-quarantined` retries it)",
            path.name,
            redact(error),
            item.path,
            item.reason_path.name,
        )

    def one(self, path: Path, raw: bytes) -> None:
        """Deliver one claimed envelope; unlink it only once its bytes are safe elsewhere."""
        try:
            envelope, data = _decode(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.quarantine(path, UNREADABLE, "", "", f"unreadable spool envelope: {exc}")
            return
        uri, key, content_type = envelope["store"], envelope["key"], envelope["content_type"]
        untrusted = seal_problem(self.root, envelope)
        if untrusted is not None:  # planted or altered: never delivered, never deleted
            self.quarantine(path, UNTRUSTED, uri, key, f"untrusted spool envelope: {untrusted}")
            return
        if self.store is not None and uri != redact(self.store.uri):
            return  # another store's object: left for a replay of that store
        if uri in self.broken:
            return  # this store is unavailable in this replay; do not wait on it again
        target = self.target(uri, envelope.get("store_options", {}))
        if target is None:
            return
        try:
            outcome, existing = _create(target, key, data, content_type)
            if outcome == "conflict":
                assert existing is not None
                _, message = _keep_conflict(self.root, target, key, data, content_type, existing)
        except ObjectRejected as exc:
            self.quarantine(path, REJECTED, uri, key, f"{type(exc).__name__}: {exc}")
            return
        except _STORE_DOWN as exc:
            self.broken[uri] = redact(f"{uri}/{key}: {type(exc).__name__}: {exc}")
            self.failed.append(self.broken[uri])
            log.warning("replay to %s stopped: %s", uri, self.broken[uri])
            return
        except Exception as exc:  # this entry only: keep it, go on with the next one
            self.failed.append(redact(f"{uri}/{key}: {type(exc).__name__}: {exc}; kept in {path}"))
            log.warning("cannot replay %s to %s, kept for the next replay: %s", key, uri, exc)
            return
        if outcome == "conflict":
            self.conflicts += 1
            self.failed.append(message)
            log.error("conflicting spooled write refused: %s", message)
        elif outcome == "duplicate":
            self.duplicates += 1
        else:
            self.delivered += 1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def replay(
    spool_dir: str | os.PathLike[str] | None = None,
    *,
    store: Store | None = None,
    retry_quarantined: bool = False,
    trust_unsealed: bool = False,
) -> ReplayReport:
    """Deliver every spooled object to its store, removing each envelope only after success.

    With ``store``, only that store's objects are replayed (through that instance); otherwise
    each object's store is reopened with ``open_store`` from the URI and options in its
    envelope. Safe to run from several processes at once: each envelope is claimed with
    ``flock``. Each entry is tried on its own: a store that is unavailable is not tried again
    for its other objects in the same replay (so a replay against a store that is down returns
    quickly), an object its store refuses for good is quarantined, and any other failure keeps
    that one entry for the next replay. ``remaining`` counts every envelope still pending
    afterwards, whatever its store. With ``retry_quarantined``, the quarantined entries (of
    ``store``, if given) go back to pending first and are replayed with the others. With
    ``trust_unsealed``, entries without a seal (an older carbonpipe's) are sealed and replayed
    (:mod:`carbonpipe.stores.adopt`).
    """
    state = _Replay(root=private_spool_dir(spool_dir, create=False), store=store)
    released = 0
    if retry_quarantined:
        released = release(state.root, store_uri=None if store is None else store.uri)
    if trust_unsealed:
        from carbonpipe.stores.adopt import trust_unsealed as adopt

        released += adopt(state.root)
    try:
        adopt_invalid(state.root)
        for path in _pending_paths(state.root):
            with _claimed(path) as fh:
                if fh is not None:
                    state.one(path, fh.read())
    finally:
        for opened in state.opened.values():
            with contextlib.suppress(Exception):
                opened.close()
    remaining = len(_pending_paths(state.root))
    held = _quarantined(state.root)
    if state.delivered or state.duplicates or state.failed:
        log.info(
            "spool replay: %d delivered, %d duplicates, %d conflicts, %d quarantined, %d remaining",
            state.delivered,
            state.duplicates,
            state.conflicts,
            state.quarantined,
            remaining,
        )
    return ReplayReport(
        delivered=state.delivered,
        duplicates=state.duplicates,
        remaining=remaining,
        failed=state.failed,
        conflicts=state.conflicts,
        quarantined=held,
        newly_quarantined=state.quarantined,
        released=released,
    )


def pending(spool_dir: str | os.PathLike[str] | None = None) -> list[SpooledItem]:
    """List the objects waiting in the spool, oldest first (unreadable envelopes are skipped)."""
    items = []
    for path in _pending_paths(private_spool_dir(spool_dir, create=False)):
        try:
            envelope, data = _decode(json.loads(path.read_bytes()))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        items.append(
            SpooledItem(
                path=path,
                store_uri=envelope["store"],
                key=envelope["key"],
                content_type=envelope["content_type"],
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                spooled_at=str(envelope.get("spooled_at", "")),
                error=str(envelope.get("error", "")),
            )
        )
    return items


def quarantined(spool_dir: str | os.PathLike[str] | None = None) -> list[QuarantinedItem]:
    """List the entries in the spool's quarantine, each with why it can never be delivered."""
    return _quarantined(_resolve(spool_dir))
