"""The spool's seal, kept in :mod:`carbonpipe._seal` (below the stores and the meter, which seals
its heartbeats with the same key); the stores import it from here."""

from __future__ import annotations

from carbonpipe._seal import KEY_FILE, MAC_FIELD, seal, seal_problem, spool_key

__all__ = ["KEY_FILE", "MAC_FIELD", "seal", "seal_problem", "spool_key"]
