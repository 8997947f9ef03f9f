"""The spool's seal: each envelope carries an HMAC made with a key only this user can read.

Replay delivers an envelope to the store it names, so a planted envelope could make any tracked
step (its background replay) or ``carbonpipe flush`` write a file anywhere this user can. The
spool folder is private (:mod:`carbonpipe._private`), and on top of that every envelope
carbonpipe writes is sealed with ``HMAC-SHA256(key, envelope)``, the key being 32 random bytes
kept ``0600`` in ``<spool>/spool.key``. Replay delivers only envelopes whose seal verifies; any
other is quarantined (reason ``untrusted``), never delivered, never deleted. Open-step entries,
final records and the sidecar's heartbeats beside them are sealed the same way: a lost step's
record is never built from a heartbeat whose seal does not verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from carbonpipe._private import folder_problem
from carbonpipe.errors import UnsafeFolder

KEY_FILE = "spool.key"
MAC_FIELD = "mac"
_KEY_BYTES = 32


def _canonical(envelope: dict[str, Any]) -> bytes:
    body = {k: v for k, v in envelope.items() if k != MAC_FIELD}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
            raise UnsafeFolder(f"spool key {path} is not a file of this user; remove it")
        if st.st_mode & 0o077:
            raise UnsafeFolder(f"spool key {path} is readable by other users; `chmod 600 {path}`")
        key = os.read(fd, 4 * _KEY_BYTES)
    finally:
        os.close(fd)
    if len(key) != 2 * _KEY_BYTES:
        raise UnsafeFolder(
            f"spool key {path} is damaged; remove it (pending entries then quarantine)"
        )
    return bytes.fromhex(key.decode("ascii"))


def spool_key(root: Path) -> bytes:
    """This spool's key, created on first use (``O_EXCL``, ``0600``; a racing writer's key wins)."""
    path = root / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    problem = folder_problem(root)
    if problem is not None:
        raise UnsafeFolder(f"spool folder {root} {problem}; `chmod 700 {root}`")
    tmp = root / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_hex(_KEY_BYTES).encode("ascii"))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        with contextlib.suppress(FileExistsError):  # link() never replaces: the first key stays
            os.link(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return _read_key(path)


def seal(root: Path, envelope: dict[str, Any]) -> bytes:
    """The envelope as JSON bytes, with its seal."""
    mac = hmac.new(spool_key(root), _canonical(envelope), hashlib.sha256).hexdigest()
    return json.dumps({**envelope, MAC_FIELD: mac}, allow_nan=False).encode()


def seal_problem(root: Path, envelope: dict[str, Any]) -> str | None:
    """Why ``envelope`` cannot be trusted, or None when its seal verifies with this spool's key."""
    mac = envelope.get(MAC_FIELD)
    if not isinstance(mac, str):
        return "the envelope carries no seal: carbonpipe did not write it into this spool"
    try:
        expected = hmac.new(spool_key(root), _canonical(envelope), hashlib.sha256).hexdigest()
    except (OSError, ValueError) as exc:
        return f"this spool's key cannot be read ({exc})"
    if not hmac.compare_digest(mac, expected):
        return "the envelope's seal does not match this spool's key: it was planted or altered"
    return None
