"""Write an object once, or keep it in the spool: the store's side of "nothing is lost".

:func:`deliver` writes create-if-absent. Identical bytes already there count as delivered;
different bytes are never overwritten (ours go to ``<spool>/conflicts/``); a store that is
down, slow or refusing gets the object spooled under ``<spool>/pending/`` for
:func:`carbonpipe.stores.spool.replay`, and one that refuses it for good gets it quarantined.
The layout and the replay are :mod:`carbonpipe.stores.spool`'s; this module is what every step
runs on its way out, so on the usual path (the store takes the object) it loads nothing else:
the spool's seal and quarantine modules are imported only when an object has to be kept.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carbonpipe.errors import ObjectNotFound, ObjectRejected, PreconditionFailed, StoreUnavailable
from carbonpipe.stores._spoolfiles import (
    CONFLICTS,
    PENDING,
    QUARANTINE,
    REJECTED,
    private_spool_dir,
    spool_dir,
    utc_now,
    write_atomic,
)
from carbonpipe.stores.base import Store, check_key
from carbonpipe.stores.redact import redact

log = logging.getLogger("carbonpipe.stores.spool")

ENVELOPE_SCHEMA = "carbonpipe.spool/1"
__all__ = ["ENVELOPE_SCHEMA", "Delivery", "deliver", "ephemeral_task"]

# The public function takes a ``spool_dir`` argument, which hides the function of that name.
_spool_root = spool_dir


def _seal(root: Path, envelope: dict[str, Any]) -> bytes:
    from carbonpipe.stores._spoolkey import seal

    return seal(root, envelope)


@dataclass(frozen=True)
class Delivery:
    """What ``deliver`` did with one object."""

    key: str
    stored: bool
    spooled: bool
    duplicate: bool
    error: str | None
    spool_path: str | None = None


def _store_options(store: Store) -> dict[str, str]:
    options = store.reopen_options()
    return {str(k): redact(str(v)) for k, v in options.items() if v is not None}


def _digest(uri: str, key: str, data: bytes) -> str:
    h = hashlib.sha256()
    for part in (uri.encode(), b"\0", key.encode(), b"\0", data):
        h.update(part)
    return h.hexdigest()[:40]


def _envelope(store: Store, key: str, data: bytes, content_type: str, error: str) -> dict[str, Any]:
    return {
        "schema": ENVELOPE_SCHEMA,
        "store": redact(store.uri),
        "store_options": _store_options(store),
        "key": key,
        "content_type": content_type,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "spooled_at": utc_now(),
        "error": redact(error),
        "data_b64": base64.b64encode(data).decode("ascii"),
    }


def _create(store: Store, key: str, data: bytes, content_type: str) -> tuple[str, bytes | None]:
    """Write create-if-absent; return ("stored" | "duplicate" | "conflict", existing bytes)."""
    for _ in range(3):
        try:
            store.put_if_absent(key, data, content_type=content_type)
            return "stored", None
        except PreconditionFailed:
            try:
                existing = store.get(key).data
            except ObjectNotFound:
                continue  # deleted between our write and our read: try the write again
            return ("duplicate", None) if existing == data else ("conflict", existing)
    raise StoreUnavailable(f"{store.url_for(key)} keeps appearing and disappearing")


def _keep_conflict(
    root: Path, store: Store, key: str, data: bytes, content_type: str, existing: bytes
) -> tuple[Path, str]:
    message = (
        f"{store.url_for(key)} already holds different bytes (sha256 "
        f"{hashlib.sha256(existing).hexdigest()[:12]}, ours {hashlib.sha256(data).hexdigest()[:12]})"
    )
    envelope = _envelope(store, key, data, content_type, message)
    envelope["existing_sha256"] = hashlib.sha256(existing).hexdigest()
    root = private_spool_dir(root)
    path = write_atomic(
        root / CONFLICTS, f"{_digest(redact(store.uri), key, data)}.json", _seal(root, envelope)
    )
    return path, redact(f"{message}; our bytes are kept in {path}")


def deliver(
    store: Store,
    key: str,
    data: bytes,
    *,
    spool_dir: str | os.PathLike[str] | None = None,
    content_type: str = "application/json",
) -> Delivery:
    """Write ``key`` once to ``store``, or spool it for ``replay``; never raise for store failures.

    Identical bytes already at ``key`` count as delivered (``duplicate=True``). Different bytes
    are never overwritten: ours go to the spool's ``conflicts/`` folder and ``error`` says so.
    An object the store refuses for good (:class:`ObjectRejected`) is spooled straight into
    the quarantine (``spool_path`` says where). Raises :class:`StoreUnavailable` only when the
    spool itself cannot be written.
    """
    check_key(key)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    root = _spool_root(spool_dir)
    try:
        outcome, existing = _create(store, key, data, content_type)
    except Exception as exc:  # anything at all: the bytes must reach the spool
        error = redact(f"{type(exc).__name__}: {exc}")
        try:
            path = _spool(root, store, key, data, content_type, error)
        except Exception as spool_exc:
            raise StoreUnavailable(
                redact(
                    f"cannot deliver {store.url_for(key)} ({error}) and cannot spool it under "
                    f"{root} ({type(spool_exc).__name__}: {spool_exc})"
                )
            ) from spool_exc
        if isinstance(exc, ObjectRejected):
            path = _quarantine_now(root, path, store, key, error)
        if path.parent.name == QUARANTINE:
            log.error(
                "%s refuses %s for good (%s); kept in the spool's quarantine as %s "
                "(`carbonpipe flush` lists it)",
                redact(store.uri),
                key,
                error,
                path,
            )
        else:
            log.warning(
                "%s could not take %s (%s); spooled to %s until `carbonpipe flush` or the next "
                "replay",
                redact(store.uri),
                key,
                error,
                path,
            )
            orchestrator = ephemeral_task()
            if orchestrator is not None:
                log.warning(
                    "this %s task runs in a pod whose disk goes with it: %s may be lost with "
                    "the spool. The step's record is also kept by %s (%s) for `carbonpipe "
                    "flush --from`; or set CARBONPIPE_SPOOL_DIR to a persistent volume",
                    orchestrator,
                    key,
                    orchestrator,
                    _COPY_KEPT_BY[orchestrator],
                )
        return Delivery(
            key=key, stored=False, spooled=True, duplicate=False, error=error, spool_path=str(path)
        )
    if outcome == "conflict":
        assert existing is not None
        try:
            path, message = _keep_conflict(root, store, key, data, content_type, existing)
        except OSError as spool_exc:
            raise StoreUnavailable(
                redact(
                    f"{store.url_for(key)} holds different bytes and the spool under {root} "
                    f"cannot keep ours ({spool_exc})"
                )
            ) from spool_exc
        log.error("conflicting write refused: %s", message)
        return Delivery(
            key=key,
            stored=False,
            spooled=False,
            duplicate=False,
            error=message,
            spool_path=str(path),
        )
    return Delivery(
        key=key,
        stored=outcome == "stored",
        spooled=False,
        duplicate=outcome == "duplicate",
        error=None,
    )


def _quarantine_now(root: Path, path: Path, store: Store, key: str, error: str) -> Path:
    """Move a just-spooled entry its store refused for good into the quarantine, if we can."""
    from carbonpipe.stores.quarantine import quarantine

    try:
        return quarantine(
            root, path, reason=REJECTED, store_uri=redact(store.uri), key=key, error=error
        ).path
    except OSError:  # a concurrent replay took it, or the move failed: pending keeps it
        return path


# Where each orchestrator keeps the step's second copy of its record (see carbonpipe.sweep).
_COPY_KEPT_BY = {
    "KFP": "the carbon_record output artifact in the pipeline root",
    "Airflow": "the carbon_record XCom",
}


def ephemeral_task() -> str | None:
    """``"KFP"`` or ``"Airflow"`` when this is an orchestrator's task in a container whose local
    disk (and so the default spool) is gone when the task ends; None otherwise, or when
    ``CARBONPIPE_SPOOL_DIR`` names a spool that may well be on a persistent volume."""
    env = os.environ
    if env.get("CARBONPIPE_SPOOL_DIR"):
        return None
    if "KUBERNETES_SERVICE_HOST" not in env and not os.path.exists("/.dockerenv"):
        return None
    if env.get("KFP_POD_NAME") or env.get("KFP_POD_UID"):
        return "KFP"
    if env.get("AIRFLOW_CTX_DAG_ID"):
        return "Airflow"
    return None


def _spool(root: Path, store: Store, key: str, data: bytes, content_type: str, error: str) -> Path:
    envelope = _envelope(store, key, data, content_type, error)
    name = f"{_digest(envelope['store'], key, data)}.json"
    root = private_spool_dir(root)  # never into a folder others can write: refused, loudly
    return write_atomic(root / PENDING, name, _seal(root, envelope))
