"""A forecast file at 1-second resolution whose cleanest window is a few seconds ahead."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

ZONE = "FR"
DIRTY, CLEAN = 400.0, 50.0


def write_forecast(
    path: Path,
    *,
    clean_in_s: float = 3.0,
    clean_for_s: int = 4,
    before_s: int = 10,
    after_s: int = 60,
) -> float:
    """Write one point per second from ``before_s`` ago to ``after_s`` ahead: DIRTY, except
    ``clean_for_s`` seconds of CLEAN starting at the whole second ``clean_in_s`` from now.
    Returns the clean window's start (epoch seconds)."""
    now = int(time.time())
    clean_start = now + int(round(clean_in_s)) + (1 if time.time() % 1 > 0.5 else 0)
    rows = ["timestamp,zone,intensity_g_per_kwh"]
    for t in range(now - before_s, now + after_s):
        value = CLEAN if clean_start <= t < clean_start + clean_for_s else DIRTY
        stamp = datetime.fromtimestamp(t, timezone.utc).isoformat()
        rows.append(f"{stamp},{ZONE},{value}")
    path.write_text("\n".join(rows) + "\n")
    return float(clean_start)
