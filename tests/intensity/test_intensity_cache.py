"""The on-disk cache of live intensity answers: hits make no request, files are private."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from carbonpipe.errors import IntensityUnavailable
from carbonpipe.intensity.base import IntensityPoint, IntensitySeries
from carbonpipe.intensity.cache import (
    CachedSource,
    IntensityCache,
    default_cache_dir,
    open_cached_source,
)
from tests.intensity import api_servers as api
from tests.intensity.api_servers import ApiServer

UTC = timezone.utc


@pytest.fixture
def em() -> Iterator[ApiServer]:
    with api.electricitymaps() as server:
        yield server


def _env(server: ApiServer) -> dict[str, str]:
    return {"ELECTRICITYMAPS_API_URL": server.url, "ELECTRICITYMAPS_API_TOKEN": api.EM_TOKEN}


def _cached(server: ApiServer, folder: Path) -> CachedSource:
    source = open_cached_source("electricitymaps", {}, _env(server), cache_dir=folder)
    assert source is not None
    return source


def test_history_is_kept_for_ever_and_a_hit_makes_no_request(em: ApiServer, tmp_path: Path) -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = start + timedelta(hours=6)
    first = _cached(em, tmp_path).history("BE", start, end, timeout_s=5)
    assert len(em.requests) == 1
    # A new process (a new cache object) answers from disk, also for a range inside.
    again = _cached(em, tmp_path)
    assert again.history("BE", start, end, timeout_s=5) == first
    inner = again.history("BE", start + timedelta(hours=1), start + timedelta(hours=3), timeout_s=5)
    assert [p.start for p in inner.points] == [start + timedelta(hours=h) for h in (1, 2)]
    assert len(em.requests) == 1 and again.requests == 0
    # A range reaching beyond what was answered goes to the API, then joins the cache.
    again.history("BE", start + timedelta(hours=4), end + timedelta(hours=2), timeout_s=5)
    assert len(em.requests) == 2
    whole = again.history("BE", start, end + timedelta(hours=2), timeout_s=5)
    assert len(whole.points) == 8 and len(em.requests) == 2


def test_files_are_private_and_hold_no_credential(em: ApiServer, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    now = datetime.now(UTC)
    source = _cached(em, folder)
    source.history(
        "BE", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC), timeout_s=5
    )
    source.forecast("BE", now, now + timedelta(hours=2), timeout_s=5)
    source.latest("BE", timeout_s=5)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert len(files) == 3
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        text = f.read_text()
        assert api.EM_TOKEN not in text and "127.0.0.1" not in text


def test_forecast_and_latest_are_kept_until_their_next_update(
    em: ApiServer, tmp_path: Path
) -> None:
    cache = IntensityCache(tmp_path)
    source = CachedSource(_cached(em, tmp_path).source, cache)
    now = datetime.now(UTC)
    source.forecast("BE", now, now + timedelta(hours=3), timeout_s=5)
    source.forecast("BE", now, now + timedelta(hours=2), timeout_s=5)
    source.latest("BE", timeout_s=5)
    source.latest("BE", timeout_s=5)
    assert len(em.requests) == 2
    # Past the end of the hour the forecast was fetched in, it is asked for again.
    later = time.time() + 3600
    assert (
        cache.get("electricitymaps", "BE", "forecast", now, now + timedelta(hours=1), now=later)
        is None
    )
    assert cache.get("electricitymaps", "BE", "forecast", now, now + timedelta(hours=1)) is not None


def test_a_corrupt_file_is_ignored_named_and_rewritten(em: ApiServer, tmp_path: Path) -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = start + timedelta(hours=2)
    _cached(em, tmp_path).history("BE", start, end, timeout_s=5)
    (path,) = tmp_path.iterdir()
    path.write_text('{"format": "carbonpipe.intensity-cache/1", "points": [[')
    source = _cached(em, tmp_path)
    series = source.history("BE", start, end, timeout_s=5)
    assert len(series.points) == 2 and len(em.requests) == 2
    assert source.cache.problems and path.name in source.cache.problems[0]
    assert _cached(em, tmp_path).history("BE", start, end, timeout_s=5) == series
    assert len(em.requests) == 2


def test_a_failure_is_not_cached(em: ApiServer, tmp_path: Path) -> None:
    em.mode = "500"
    source = _cached(em, tmp_path)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(IntensityUnavailable):
        source.history("BE", start, start + timedelta(hours=1), timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def test_warm_hits_cost_about_a_millisecond(em: ApiServer, tmp_path: Path) -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=7)
    _cached(em, tmp_path).history("BE", start, end, timeout_s=5)
    source = _cached(em, tmp_path)
    source.history("BE", start, end, timeout_s=5)  # the first read parses the file
    began = time.perf_counter()
    for _ in range(50):
        source.history("BE", start + timedelta(hours=5), start + timedelta(hours=6), timeout_s=5)
    per_call = (time.perf_counter() - began) / 50
    assert per_call < 0.01  # ~1 ms expected; wide margin for a busy machine


def test_table_opens_nothing_and_the_default_folder(tmp_path: Path) -> None:
    assert open_cached_source("table") is None
    assert default_cache_dir({"CARBONPIPE_CACHE_DIR": str(tmp_path)}) == tmp_path / "intensity"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/carbonpipe/intensity")


def test_a_series_of_another_signal_replaces_the_history(tmp_path: Path) -> None:
    cache = IntensityCache(tmp_path)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def series(signal: str, value: float) -> IntensitySeries:
        point = IntensityPoint(t0, t0 + timedelta(hours=1), value)
        return IntensitySeries((point,), "x", "Z", signal=signal)

    cache.put(series("average", 100.0), "history", t0, t0 + timedelta(hours=1))
    cache.put(series("marginal", 300.0), "history", t0, t0 + timedelta(hours=1))
    hit = IntensityCache(tmp_path).get("x", "Z", "history", t0, t0 + timedelta(hours=1))
    assert (
        hit is not None and hit.signal == "marginal" and hit.points[0].intensity_g_per_kwh == 300.0
    )


def test_a_forecast_asked_again_from_a_later_now_is_answered_from_disk(
    em: ApiServer, tmp_path: Path
) -> None:
    source = _cached(em, tmp_path)
    now = datetime.now(UTC)
    first = source.forecast("BE", now, now + timedelta(hours=3), timeout_s=5)
    assert first.points[-1].start < now + timedelta(hours=3)
    later = now + timedelta(minutes=2)
    second = source.forecast("BE", later, later + timedelta(hours=3), timeout_s=5)
    crossed = later.replace(minute=0, second=0, microsecond=0) > now  # an update in between
    assert len(em.requests) == (2 if crossed else 1) and second.forecast
    assert second.points[0].start <= later < second.points[0].end


def test_after_a_failure_the_source_is_not_asked_again_for_a_while(
    em: ApiServer, tmp_path: Path
) -> None:
    em.mode = "hang"
    start = datetime(2024, 3, 1, tzinfo=UTC)
    source = _cached(em, tmp_path)
    began = time.monotonic()
    with pytest.raises(IntensityUnavailable, match="deadline"):
        source.history("BE", start, start + timedelta(hours=1), timeout_s=0.3)
    # The next step's stop (a new source object, same API) does not wait again.
    with pytest.raises(IntensityUnavailable, match="not asked again"):
        _cached(em, tmp_path).history("BE", start, start + timedelta(hours=2), timeout_s=0.3)
    assert time.monotonic() - began < 1.5 and len(em.requests) == 1


def test_a_steps_pricing_reads_the_source_through_the_disk_cache(
    em: ApiServer, tmp_path: Path
) -> None:
    from carbonpipe.intensity.timed import step_series

    env = {**_env(em), "CARBONPIPE_CACHE_DIR": str(tmp_path)}
    where = {"provider": "gcp", "region": "europe-west1", "country_iso": "BEL"}
    start = datetime(2024, 3, 1, 10, tzinfo=UTC)
    first, why = step_series(
        where, start, start + timedelta(hours=2), spec="electricitymaps", env=env
    )
    assert why is None and first is not None and len(em.requests) == 1
    # Another step in the same window (another process: the cache is on disk) asks nothing.
    again, why = step_series(
        where, start, start + timedelta(hours=1), spec="electricitymaps", env=env
    )
    assert why is None and again is not None and len(em.requests) == 1
    assert again.points[0] == first.points[0]


def test_a_source_given_up_on_is_not_waited_on_again_by_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline's wait gives up before the abandoned request does: the failure is noted at
    once, so a step stopping just after does not wait the whole deadline again."""
    import socket
    import threading

    from carbonpipe.intensity import cache as cache_module
    from carbonpipe.intensity.timed import fetch_history

    monkeypatch.setattr(cache_module, "_failed", {})
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accepts and never answers
        hung.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(hung.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        env = {"ELECTRICITYMAPS_API_URL": url, "ELECTRICITYMAPS_API_TOKEN": api.EM_TOKEN}
        source = open_cached_source("electricitymaps", {}, env, cache_dir=tmp_path)
        assert source is not None
        end = datetime.now(UTC)
        began = time.monotonic()
        with pytest.raises(IntensityUnavailable, match="within 0.5 s"):
            fetch_history(source, "BE", end - timedelta(hours=1), end, timeout_s=0.5)
        first = time.monotonic() - began
        began = time.monotonic()
        with pytest.raises(IntensityUnavailable, match="not asked again"):
            fetch_history(source, "BE", end - timedelta(hours=1), end, timeout_s=0.5)
        second = time.monotonic() - began
        assert first < 3 and second < 0.25, (first, second)
        assert source.requests == 1
    finally:
        stop.set()
        acceptor.join(2)
        for s in held:
            s.close()
        hung.close()


def test_warming_a_network_source_loads_its_modules_and_asks_it_nothing(em: ApiServer) -> None:
    """What ``carbonpipe run`` does while its command runs: the stop then has no import left."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from carbonpipe.intensity.timed import warm\n"
        "warm('electricitymaps', {})\n"
        "print(json.dumps([m in sys.modules for m in ("
        "'carbonpipe.intensity.electricitymaps', 'carbonpipe.intensity.cache', 'http.client')]))\n"
    )
    env = {**os.environ, **_env(em)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True, True]
    assert em.requests == []


def _hourly(start: datetime, hours: int, zone: str = "BE") -> IntensitySeries:
    points = tuple(
        IntensityPoint(start + timedelta(hours=h), start + timedelta(hours=h + 1), 100.0 + h)
        for h in range(hours)
    )
    return IntensitySeries(points=points, source_name="electricitymaps", zone=zone)


def test_a_stops_window_up_to_now_is_answered_from_disk_within_the_hour(tmp_path: Path) -> None:
    """Each stop asks history up to "now": asked once per hour per zone, not once per step."""
    cache = IntensityCache(tmp_path)
    six = datetime(2026, 12, 5, 6, tzinfo=UTC)
    asked_at = six + timedelta(hours=4, minutes=20)  # 10:20; published up to 10:00
    cache.put(_hourly(six, 4), "history", six, asked_at, now=asked_at.timestamp())

    later = six + timedelta(hours=4, minutes=40)  # another step stops at 10:40
    hit = cache.get(
        "electricitymaps", "BE", "history", six + timedelta(hours=1), later, now=later.timestamp()
    )
    assert hit is not None and [p.start.hour for p in hit.points] == [7, 8, 9]
    # Past the hour, the source may have published 10:00-11:00: asked again.
    next_hour = six + timedelta(hours=5, minutes=5)
    assert (
        cache.get("electricitymaps", "BE", "history", six, next_hour, now=next_hour.timestamp())
        is None
    )
    # A window reaching more than an hour past what was answered is asked, in the same hour too.
    assert (
        cache.get(
            "electricitymaps",
            "BE",
            "history",
            six,
            six + timedelta(hours=5, minutes=30),
            now=later.timestamp(),
        )
        is None
    )


def test_stops_in_the_same_hour_ask_the_api_once(em: ApiServer, tmp_path: Path) -> None:
    source = _cached(em, tmp_path)
    first_now = datetime.now(UTC)
    start = first_now - timedelta(hours=2)
    source.history("BE", start, first_now, timeout_s=5)
    second_now = datetime.now(UTC) + timedelta(seconds=1)
    source.history("BE", start, second_now, timeout_s=5)
    same_hour = first_now.replace(minute=0, second=0, microsecond=0) == second_now.replace(
        minute=0, second=0, microsecond=0
    )
    assert len(em.requests) == (1 if same_hour else 2)
