"""Adopt what an older carbonpipe spooled without a seal: ``carbonpipe flush --trust-unsealed``.

Envelopes carbonpipe writes are sealed with the spool's key (:mod:`carbonpipe.stores._spoolkey`);
replay quarantines any other as ``untrusted``, so a planted entry is never delivered. Entries
spooled before the seal existed are unsealed too, and would otherwise stay in the quarantine for
ever. The user who has looked at them (``carbonpipe flush`` lists each with its store and key)
vouches for them with ``--trust-unsealed``: unsealed entries, pending or quarantined as
untrusted, are sealed and replayed. An entry that carries a seal that does not verify was
altered or forged, and stays in the quarantine whatever the flag.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from carbonpipe.stores._spoolfiles import PENDING, move_unique, write_atomic
from carbonpipe.stores._spoolkey import MAC_FIELD, seal
from carbonpipe.stores.quarantine import UNTRUSTED, quarantined

__all__ = ["trust_unsealed"]

_MAX_ENVELOPE_BYTES = 64 * 1024 * 1024


def _unsealed(path: Path) -> dict[str, Any] | None:
    """The envelope at ``path`` if it is a JSON object without a seal, else None."""
    try:
        if path.stat().st_size > _MAX_ENVELOPE_BYTES:
            return None
        envelope = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(envelope, dict) or MAC_FIELD in envelope:
        return None
    return envelope


def trust_unsealed(root: Path) -> int:
    """Seal the unsealed envelopes of the spool at ``root`` and put them in pending; return how many."""
    adopted = 0
    for item in quarantined(root):
        if item.reason != UNTRUSTED or _unsealed(item.path) is None:
            continue
        try:
            moved = move_unique(item.path, root / PENDING)
        except FileNotFoundError:
            continue  # taken by a concurrent flush
        with contextlib.suppress(OSError):
            os.unlink(item.reason_path)
        with contextlib.suppress(OSError):
            os.utime(moved)
    for path in sorted((root / PENDING).glob("*.json")):
        envelope = _unsealed(path)
        if envelope is None:
            continue
        write_atomic(root / PENDING, path.name, seal(root, envelope))
        adopted += 1
    return adopted
