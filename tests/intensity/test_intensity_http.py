"""The intensity HTTP client: one total deadline, capped bodies, messages without secrets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from carbonpipe.errors import IntensityUnavailable
from carbonpipe.intensity.http import deadline_after, get_json, redact, request


@pytest.fixture
def dribbler() -> Iterator[str]:
    """A server that sends its headers, then one body byte every 50 ms for ever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n[")
            while not stop.is_set():
                try:
                    conn.sendall(b" ")
                except OSError:
                    break
                time.sleep(0.05)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    listener.close()


def test_a_dribbling_body_costs_the_deadline_and_no_more(dribbler: str) -> None:
    began = time.monotonic()
    with pytest.raises(IntensityUnavailable, match="deadline"):
        get_json(dribbler + "/x", source="t", deadline=deadline_after(0.4))
    assert time.monotonic() - began < 1.5


def test_a_body_over_the_cap_is_refused(dribbler: str) -> None:
    with pytest.raises(IntensityUnavailable, match="larger than"):
        get_json(dribbler + "/x", source="t", deadline=deadline_after(5), max_bytes=10)


def test_retry_after_past_the_deadline_fails_at_once() -> None:
    from tests.intensity import api_servers as api

    with api.carbon_aware_sdk() as server:
        server.mode = "429"  # Retry-After: 600
        began = time.monotonic()
        with pytest.raises(IntensityUnavailable, match="throttled"):
            request(
                "GET", server.url + "/emissions/bylocation", source="t", deadline=deadline_after(5)
            )
        assert time.monotonic() - began < 1 and len(server.requests) == 1


def test_messages_hold_neither_query_nor_secrets() -> None:
    with pytest.raises(IntensityUnavailable) as info:
        get_json(
            "http://127.0.0.1:9/v3/x",
            source="t",
            deadline=deadline_after(2),
            params={"token": "sekrit-123"},
            basic_auth=("user", "pass-456"),
        )
    text = str(info.value)
    assert "127.0.0.1/v3/x" in text and "sekrit" not in text and "pass-456" not in text
    assert redact("a pass-456 b", ["pass-456", None, ""]) == "a *** b"


def test_only_http_urls() -> None:
    with pytest.raises(IntensityUnavailable, match="bad URL"):
        get_json("file:///etc/passwd", source="t", deadline=deadline_after(1))
