"""A small HTTP client for the intensity APIs: one total deadline, capped bodies, redacted errors.

Every call of a live source shares one deadline (``time.monotonic()`` seconds) across its
requests (a login, the data, a retry): each socket operation waits at most what is left of it,
and the body is read in chunks that check it, so a server that hangs or dribbles costs the
deadline and no more. A ``429`` or ``503`` with ``Retry-After`` is retried once, only when the
wait fits in what is left.

Any failure raises :class:`~carbonpipe.errors.IntensityUnavailable` whose message names the
source, the host and path (never the query, never a header) and the reason; every string in
``secrets`` is replaced by ``***`` in it as a last guard. The body of an error response is never
quoted (an API may echo a token). JSON bodies go through :func:`carbonpipe._safejson.loads`.

Uses :mod:`http.client` directly: no proxy from the environment, no redirect followed.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from carbonpipe._safejson import UnsafeJSON, loads
from carbonpipe.errors import IntensityUnavailable

__all__ = ["MAX_BODY_BYTES", "Response", "deadline_after", "get_json", "redact", "request"]

MAX_BODY_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024
_USER_AGENT = "carbonpipe-intensity/1"


@dataclass(frozen=True)
class Response:
    """A response that came back within the deadline."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def deadline_after(timeout_s: float) -> float:
    """The ``time.monotonic()`` instant ``timeout_s`` from now (at least 1 ms)."""
    return time.monotonic() + max(float(timeout_s), 0.001)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret (and its basic-auth encoding) replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}{parts.path or '/'}"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: not waited for (no deadline here is that long)
    return seconds if 0 <= seconds < 3600 else None


def _once(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
    max_bytes: int,
) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the URL must be http:// or https:// with a host")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timeout = _left(deadline)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=dict(headers))
        sock = conn.sock  # kept: the response may take it over from the connection
        if sock is not None:
            sock.settimeout(_left(deadline))
        resp = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        while True:
            left = _left(deadline)
            if sock is not None and sock.fileno() >= 0:
                sock.settimeout(left)
            chunk = resp.read1(_CHUNK)  # at most one socket read: the deadline holds between
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise UnsafeJSON(f"body larger than {max_bytes} bytes")
            chunks.append(chunk)
            _left(deadline)
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks))
    finally:
        conn.close()


def request(
    method: str,
    url: str,
    *,
    source: str,
    deadline: float,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    basic_auth: tuple[str, str] | None = None,
    secrets: Iterable[str | None] = (),
    max_bytes: int = MAX_BODY_BYTES,
    ok: Iterable[int] = (200,),
) -> Response:
    """Send one request (one retry on ``429``/``503`` + ``Retry-After`` within the deadline).

    Raises ``IntensityUnavailable`` on a timeout, a connection failure, a status not in ``ok``
    (``401``/``403``: refused credentials; ``429``: throttled; ``5xx``: server error) or a body
    over ``max_bytes``. The message never holds a header, the query or anything in ``secrets``.
    """
    secret_list = [s for s in secrets if s]
    sent = {"User-Agent": _USER_AGENT, "Accept": "application/json", **(headers or {})}
    if basic_auth is not None:
        user, password = basic_auth
        pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        sent["Authorization"] = f"Basic {pair}"
        secret_list += [password, pair]
    body = None
    if json_body is not None:
        import json

        body = json.dumps(json_body, allow_nan=False).encode("utf-8")
        sent["Content-Type"] = "application/json"
    full = url + ("?" + urlencode(dict(params)) if params else "")
    where = _where(url)
    ok_set = set(ok)

    def fail(reason: str) -> IntensityUnavailable:
        return IntensityUnavailable(redact(f"{source}: {where}: {reason}", secret_list))

    retried = False
    while True:
        try:
            resp = _once(method, full, sent, body, deadline, max_bytes)
        except TimeoutError:
            raise fail("no answer within the deadline") from None
        except UnsafeJSON as exc:
            raise fail(f"refused the body: {exc}") from None
        except ValueError as exc:
            raise fail(f"bad URL ({exc})") from None
        except ssl.SSLError as exc:
            raise fail(f"TLS failed ({type(exc).__name__})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise fail(f"connection failed ({type(exc).__name__})") from None
        if resp.status in ok_set:
            return resp
        wait = _retry_after(resp.headers.get("retry-after"))
        if (
            resp.status in (429, 503)
            and not retried
            and wait is not None
            and time.monotonic() + wait < deadline - 0.05
        ):
            retried = True
            time.sleep(wait)
            continue
        if resp.status in (401, 403):
            raise fail(f"credentials refused (HTTP {resp.status})")
        if resp.status == 429:
            raise fail("throttled (HTTP 429)")
        if resp.status >= 500:
            raise fail(f"server error (HTTP {resp.status})")
        raise fail(f"unexpected answer (HTTP {resp.status})")


def get_json(
    url: str,
    *,
    source: str,
    deadline: float,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    basic_auth: tuple[str, str] | None = None,
    secrets: Iterable[str | None] = (),
    max_bytes: int = MAX_BODY_BYTES,
) -> Any:
    """GET ``url`` and parse its JSON body under caps; any failure is ``IntensityUnavailable``."""
    resp = request(
        "GET",
        url,
        source=source,
        deadline=deadline,
        params=params,
        headers=headers,
        basic_auth=basic_auth,
        secrets=secrets,
        max_bytes=max_bytes,
    )
    try:
        return loads(resp.body, max_bytes=max_bytes)
    except UnsafeJSON as exc:
        raise IntensityUnavailable(
            redact(f"{source}: {_where(url)}: malformed body ({exc})", secrets)
        ) from None
