"""The facts about the host a record's ``measurement`` carries: OS, Python, CPU count, RAM size.

The same facts CodeCarbon 3.3 puts into its ``emissions.csv`` (``os``, ``python_version``,
``cpu_count``, ``ram_total_size``), read the same way (``platform.platform()``,
``platform.python_version()``, the logical CPU count, total RAM in GiB: bytes / 2**30), but
without psutil, so ``carbonpipe export --format codecarbon`` fills those columns. Read once per
process. ``platform.platform()`` takes a few milliseconds (it runs ``uname -p`` and scans the
Python binary for its libc), so the measuring sidecar reads them while the step runs and hands
them over with its figures; the step's own process reads them only when no sidecar did.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

_BYTES_PER_GIB = 1024**3
HOST_KEYS = ("os", "python_version", "cpu_count", "ram_total_size_gib")


@lru_cache(maxsize=1)
def host_facts() -> dict[str, Any]:
    """``{os, python_version, cpu_count, ram_total_size_gib}``; ``None`` for what is unknown."""
    return {
        "os": _text(platform.platform),
        "python_version": _text(platform.python_version),
        "cpu_count": os.cpu_count() or None,
        "ram_total_size_gib": ram_total_size_gib(),
    }


def ram_total_size_gib() -> float | None:
    """The machine's total RAM in GiB (as CodeCarbon's ``ram_total_size``), or None."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not reported
        return None
    return total / _BYTES_PER_GIB if total > 0 else None


def _text(read: Any) -> str | None:
    try:
        value = read()
    except Exception:  # (a fact we cannot read is null, never a failed step)
        return None
    return str(value) or None


def checked_host(raw: Any) -> dict[str, Any] | None:
    """``raw`` if it has the shape :func:`host_facts` gives (read back from the sidecar's result:
    its four keys; short text, a positive count, a finite size), else None."""
    if not isinstance(raw, dict) or set(raw) != set(HOST_KEYS):
        return None
    text_ok = all(
        raw[k] is None or (isinstance(raw[k], str) and 0 < len(raw[k]) <= 200)
        for k in ("os", "python_version")
    )
    count = raw["cpu_count"]
    size = raw["ram_total_size_gib"]
    count_ok = count is None or (type(count) is int and 0 < count < 1 << 20)
    size_ok = size is None or (
        isinstance(size, (int, float)) and not isinstance(size, bool) and 0 < size < 1e9
    )
    return dict(raw) if text_ok and count_ok and size_ok else None
