"""The sidecar's process plumbing: read its answers under a deadline, close and reap it.

A sidecar that is slow to exit is reaped later (at the next start, or at interpreter exit),
never waited for on the step's path.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess
from carbonpipe.measure.base import _describe

_REAP_TIMEOUT_S = 1.0


def _children_cpu_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _read_line(stream: IO[bytes], deadline: float) -> tuple[bytes, str]:
    """Read one line from a pipe before ``deadline``: (line, "line" | "eof" | "timeout")."""
    import select

    fd = stream.fileno()
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return buffer, "timeout"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return buffer, "eof"
        buffer += chunk
    return buffer.split(b"\n", 1)[0], "line"


def _parse_answer(line: bytes, errors: list[str]) -> dict[str, Any] | None:
    import json

    try:
        raw = json.loads(line)
    except ValueError as exc:
        errors.append(f"the sidecar's answer was not JSON: {_describe(exc)}")
        return None
    if not isinstance(raw, dict):
        errors.append("the sidecar's answer was not a JSON object")
        return None
    return raw


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# Sidecars that answered and are exiting. Waiting for their exit would only lengthen the step,
# and a thread to wait would take the GIL from it: they are reaped by the next start() (before
# its t0, so their CPU time cannot land in that step's count), stop(), or at exit, where a
# sidecar has long exited (it does so right after answering) and the wait is bounded anyway.
_EXITING: list[subprocess.Popen[bytes]] = []
_EXIT_REAP_TIMEOUT_S = 0.2


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    if not _EXITING:
        import atexit

        atexit.register(_reap_exited, wait_s=_EXIT_REAP_TIMEOUT_S)
    _EXITING.append(proc)


def _reap_exited(wait_s: float = 0.0) -> None:
    """Reap the answered sidecars that have exited, waiting up to ``wait_s`` for each."""
    import subprocess

    for proc in list(_EXITING):
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        _EXITING.remove(proc)


def _drain(stream: IO[bytes] | None) -> str:
    """Read what a dead sidecar left on stderr, without blocking."""
    import select

    if stream is None:
        return ""
    fd = stream.fileno()
    data = b""
    while len(data) < 65536:
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def _reap(proc: subprocess.Popen[bytes]) -> int | None:
    import subprocess

    try:
        return proc.wait(timeout=_REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        return proc.wait(timeout=_REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"
