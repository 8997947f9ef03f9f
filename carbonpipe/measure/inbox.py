"""The sidecar's stdin, read a line at a time while it watches the step's process.

The step writes its configuration, ``t0`` and ``stop`` on the sidecar's stdin. A step that dies
without writing ``stop`` closes that pipe, unless a process it forked without exec'ing (a data
loader's worker, ``multiprocessing``'s fork start method) still holds the pipe's write end: the
sidecar would then live as long as that grandchild. So :class:`Inbox` also watches the step's
process itself: through a pidfd on Linux 5.3+ (no wake-up until it exits), else by looking at
its parent pid every few seconds (it is re-parented when the step dies). Either way, the step's
death reads as the end of the input. Lines already in the pipe are still read first.
"""

from __future__ import annotations

import contextlib
import os
import select

# Without a pidfd: how often the sidecar looks whether its parent is still the step.
PARENT_POLL_S = 2.0
_CHUNK = 65536


class Inbox:
    """Lines from a pipe, ending when the pipe closes or the watched parent process exits."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._parent: int | None = None
        self._pidfd: int | None = None
        self._gone = False

    def watch(self, parent_pid: object) -> None:
        """From now on, treat the exit of ``parent_pid`` (our parent, the step) as end of input."""
        if not isinstance(parent_pid, int) or parent_pid <= 0:
            return
        self._parent = parent_pid
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(parent_pid)
        # Opened on a pid that is our parent, the pidfd names that process, not a recycled pid.
        self._gone = os.getppid() != parent_pid

    def readline(self) -> bytes:
        """Return the next line (with its newline), or ``b""`` once the input has ended."""
        while b"\n" not in self._buffer:
            if self._gone:
                self._drain()
                break
            fds = [self._fd] if self._pidfd is None else [self._fd, self._pidfd]
            timeout = PARENT_POLL_S if self._pidfd is None and self._parent else None
            ready, _, _ = select.select(fds, [], [], timeout)
            if self._fd in ready:
                chunk = os.read(self._fd, _CHUNK)
                if not chunk:
                    break
                self._buffer += chunk
            else:  # the pidfd is readable, or the poll timed out: is the parent still ours?
                self._gone = self._parent is not None and (
                    self._pidfd in ready or os.getppid() != self._parent
                )
        line, newline, self._buffer = self._buffer.partition(b"\n")
        return line + newline if newline else b""

    @property
    def parent_gone(self) -> bool:
        """Whether the watched parent is known to have exited."""
        return self._gone

    def _drain(self) -> None:
        """Read what the parent wrote before it died, without waiting for more."""
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if not ready:
                return
            chunk = os.read(self._fd, _CHUNK)
            if not chunk:
                return
            self._buffer += chunk

    def close(self) -> None:
        """Close the pidfd (the pipe belongs to the process)."""
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
