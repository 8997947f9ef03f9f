"""The metadata probes' HTTP/1.1: non-blocking exchanges on raw sockets, one selector, one deadline.

Just enough of the protocol for a metadata server's answer: a request line and headers out,
a status line, headers and a body (plain, Content-Length or chunked) in, each capped; any
body that does not parse is "no answer", never an exception.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carbonpipe.location.providers import (
    MAX_BODY_BYTES,
)

_STATUS_LINE_RE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2})(?: [^\r\n]*)?")

_MAX_HEADER_BYTES = 8192
# ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses.
_LENGTH_RE = re.compile(r"[0-9]{1,12}")
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,8}")


# -- probes: one generator per provider, yielding requests and receiving responses ------------


@dataclass(frozen=True)
class _Endpoint:
    """An http:// metadata server: host, port and an optional path prefix."""

    host: str
    port: int
    prefix: str = ""

    @property
    def url(self) -> str:
        """Return the endpoint as a URL (the cache key and notes use it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.prefix}"


def _show(body: bytes) -> str:
    """Return a short, safe rendering of a body for a note."""
    return repr(body[:60]) + ("..." if len(body) > 60 else "")


@dataclass(frozen=True)
class _Request:
    """An HTTP request a probe wants sent to its provider's endpoint."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Response:
    """A complete HTTP response; header names are lower-cased."""

    status: int
    headers: Mapping[str, str]
    body: bytes


# -- the event loop: every probe at once, one deadline ----------------------------------------


class _Failed(Exception):
    """A transport or protocol failure that ends a probe; ``conclusive`` if it proves absence."""

    def __init__(self, reason: str, *, conclusive: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conclusive = conclusive


# Errors that say nothing listens there: as good as a "no" from the provider.
_ABSENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
        errno.EAFNOSUPPORT,
    }
)


class _Exchange:
    """One HTTP/1.1 request and its response on a non-blocking socket, stepped by the loop."""

    def __init__(self, family: int, address: Any, payload: bytes) -> None:
        try:
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise _Failed(f"cannot open a socket: {exc.strerror}") from None
        self.sock.setblocking(False)
        self._out = memoryview(payload)
        self._in = bytearray()
        self._connected = False
        err = self.sock.connect_ex(address)
        if err == 0:
            self._connected = True
        elif err not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EALREADY):
            self.close()
            raise _Failed(os.strerror(err).lower(), conclusive=err in _ABSENT_ERRNOS)
        self.events = selectors.EVENT_WRITE

    def step(self) -> _Response | None:
        """Make what progress the socket allows; return the response once it is complete."""
        try:
            if not self._connected:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise _Failed(os.strerror(err).lower(), conclusive=err in _ABSENT_ERRNOS)
                self._connected = True
            if self._out:
                sent = self.sock.send(self._out)
                self._out = self._out[sent:]
                if not self._out:
                    self.events = selectors.EVENT_READ
                return None
            chunk = self.sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise _Failed(
                (exc.strerror or str(exc)).lower(), conclusive=exc.errno in _ABSENT_ERRNOS
            ) from None
        self._in += chunk
        return _parse_response(self._in, eof=not chunk)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()


def _parse_response(buf: bytearray, *, eof: bool) -> _Response | None:
    """Parse a buffered response; None while incomplete, _Failed when unusable or too big."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEADER_BYTES:
                raise _Failed(f"headers longer than {_MAX_HEADER_BYTES} bytes")
            if eof:
                raise _Failed("connection closed before the headers ended", conclusive=False)
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        m = _STATUS_LINE_RE.fullmatch(lines[0])
        if not m:
            raise _Failed(f"not an HTTP response: {_show(bytes(buf[:40]))}")
        status = int(m.group(1))
        if status >= 200:
            break
        del buf[: end + 4]  # an interim 1xx response: the real one follows
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _Failed("malformed header line")
        headers[name.strip().lower()] = value.strip()
    body = bytes(buf[end + 4 :])
    if status in (204, 304):
        return _Response(status, headers, b"")
    too_big = _Failed(f"body larger than {MAX_BODY_BYTES} bytes")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        if len(body) > 2 * MAX_BODY_BYTES + 1024:
            raise too_big
        decoded = _dechunk(body)
        if decoded is not None and len(decoded) > MAX_BODY_BYTES:
            raise too_big
        if decoded is None and eof:
            raise _Failed("connection closed inside a chunked body", conclusive=False)
        return None if decoded is None else _Response(status, headers, decoded)
    if "content-length" in headers:
        length_text = headers["content-length"]
        if not _LENGTH_RE.fullmatch(length_text):
            raise _Failed(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise too_big
        if len(body) >= length:
            return _Response(status, headers, body[:length])
        if eof:
            raise _Failed("connection closed before the body ended", conclusive=False)
        return None
    if len(body) > MAX_BODY_BYTES:
        raise too_big
    return _Response(status, headers, body) if eof else None


def _dechunk(raw: bytes) -> bytes | None:
    """Decode a chunked body; None while the last chunk has not arrived."""
    out = bytearray()
    pos = 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = raw[pos:eol].split(b";")[0].strip()
        if not _CHUNK_SIZE_RE.fullmatch(size_text):
            raise _Failed("malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            return bytes(out) if raw.find(b"\r\n", eol + 2) >= 0 else None
        start, stop = eol + 2, eol + 2 + size
        if len(raw) < stop + 2:
            return None
        out += raw[start:stop]
        if len(out) > MAX_BODY_BYTES:
            return bytes(out)
        pos = stop + 2


def _encode(ep: _Endpoint, req: _Request) -> bytes:
    """Serialise a request; ``Connection: close`` so the server ends what we do not read."""
    host = f"[{ep.host}]" if ":" in ep.host else ep.host
    lines = [
        f"{req.method} {req.path} HTTP/1.1",
        f"Host: {host}:{ep.port}",
        "User-Agent: carbonpipe-cloud-detect",
        "Accept: */*",
        "Connection: close",
        *(f"{k}: {v}" for k, v in req.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
