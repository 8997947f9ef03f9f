"""Each live intensity source against a loopback server speaking its documented API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from carbonpipe.errors import ConfigError, IntensityUnavailable
from carbonpipe.intensity.carbonaware import CarbonAwareSdkSource
from carbonpipe.intensity.electricitymaps import ElectricityMapsSource
from carbonpipe.intensity.registry import open_source
from carbonpipe.intensity.uk import UkCarbonIntensitySource
from carbonpipe.intensity.watttime import LBS_PER_MWH_TO_G_PER_KWH, WattTimeSource
from tests.intensity import api_servers as api
from tests.intensity.api_servers import ApiServer

UTC = timezone.utc
SECRETS = (api.EM_TOKEN, api.WT_PASSWORD)


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def em() -> Iterator[ApiServer]:
    with api.electricitymaps() as server:
        yield server


@pytest.fixture
def wt() -> Iterator[ApiServer]:
    with api.watttime() as server:
        yield server


@pytest.fixture
def sdk() -> Iterator[ApiServer]:
    with api.carbon_aware_sdk() as server:
        yield server


@pytest.fixture
def uk() -> Iterator[ApiServer]:
    with api.uk_carbon_intensity() as server:
        yield server


def _em(server: ApiServer, token: str = api.EM_TOKEN) -> ElectricityMapsSource:
    env = {"ELECTRICITYMAPS_API_URL": server.url, "ELECTRICITYMAPS_API_TOKEN": token}
    source = open_source("electricitymaps", {}, env)
    assert isinstance(source, ElectricityMapsSource)
    return source


def _wt(server: ApiServer, password: str = api.WT_PASSWORD) -> WattTimeSource:
    env = {
        "WATTTIME_API_URL": server.url,
        "WATTTIME_USERNAME": api.WT_USER,
        "WATTTIME_PASSWORD": password,
    }
    source = open_source("watttime", {}, env)
    assert isinstance(source, WattTimeSource)
    return source


def _sdk(server: ApiServer) -> CarbonAwareSdkSource:
    source = open_source("carbon-aware-sdk", {}, {"CARBON_AWARE_SDK_URL": server.url})
    assert isinstance(source, CarbonAwareSdkSource)
    return source


def _uk(server: ApiServer, **options: object) -> UkCarbonIntensitySource:
    source = open_source("uk", options, {"CARBONPIPE_UK_INTENSITY_URL": server.url})
    assert isinstance(source, UkCarbonIntensitySource)
    return source


# --- Electricity Maps -----------------------------------------------------------------------


def test_electricitymaps_recent_history_sends_the_token_header(em: ApiServer) -> None:
    now = datetime.now(UTC)
    start, end = _hour(now) - timedelta(hours=5), _hour(now) - timedelta(hours=2)
    series = _em(em).history("BE", start, end, timeout_s=5)
    assert [p.start for p in series.points] == [start + timedelta(hours=i) for i in range(3)]
    assert [p.intensity_g_per_kwh for p in series.points] == [
        api.em_value(p.start) for p in series.points
    ]
    assert series.signal == "average" and series.source_name == "electricitymaps"
    assert series.resolution_s == 3600 and not series.forecast
    path, headers = em.requests[-1]
    assert path == "/v3/carbon-intensity/history?zone=BE"
    assert headers["auth-token"] == api.EM_TOKEN


def test_electricitymaps_older_history_uses_past_range_in_10_day_requests(em: ApiServer) -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=12)
    series = _em(em).history("DE", start, end, timeout_s=5)
    assert len(series.points) == 12 * 24
    assert series.points[0].start == start and series.points[-1].end == end
    paths = [p for p, _ in em.requests]
    assert len(paths) == 2 and all(p.startswith("/v3/carbon-intensity/past-range?") for p in paths)


def test_electricitymaps_by_data_center(em: ApiServer) -> None:
    source = _em(em)
    series = source.latest("gcp:europe-west1", timeout_s=5)
    assert len(series.points) == 1
    assert "dataCenterProvider=gcp&dataCenterRegion=europe-west1" in em.requests[-1][0]


def test_electricitymaps_forecast(em: ApiServer) -> None:
    now = datetime.now(UTC)
    series = _em(em).forecast("BE", now, now + timedelta(hours=6), timeout_s=5)
    assert series.forecast and 6 <= len(series.points) <= 7
    assert series.points[0].start <= now < series.points[0].end


def test_electricitymaps_wrong_or_missing_token_is_unavailable_without_the_token(
    em: ApiServer,
) -> None:
    now = datetime.now(UTC)
    bad = "em-wrong-token-zz9"
    with pytest.raises(IntensityUnavailable, match="HTTP 401") as info:
        _em(em, token=bad).history("BE", now - timedelta(hours=3), now, timeout_s=5)
    assert bad not in str(info.value)
    with pytest.raises(IntensityUnavailable, match="ELECTRICITYMAPS_API_TOKEN"):
        open_source("electricitymaps", {}, {"ELECTRICITYMAPS_API_URL": em.url}).forecast(
            "BE", now, now + timedelta(hours=1), timeout_s=5
        )


# --- WattTime -------------------------------------------------------------------------------


def test_watttime_logs_in_then_converts_moer_to_grams(wt: ApiServer) -> None:
    start = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    source = _wt(wt)
    series = source.history("CAISO_NORTH", start, start + timedelta(hours=1), timeout_s=5)
    assert len(series.points) == 12
    first = series.points[0]
    assert first.intensity_g_per_kwh == pytest.approx(api.wt_value_lbs(start) * 0.45359237)
    assert LBS_PER_MWH_TO_G_PER_KWH == 0.45359237
    assert series.signal == "marginal" and series.resolution_s == 300
    assert [p for p, _ in wt.requests][0] == "/login"
    assert wt.requests[1][1]["Authorization"].startswith("Bearer wt-token-1")
    # The token is reused for the next call: no second login.
    source.forecast(
        "CAISO_NORTH", datetime.now(UTC), datetime.now(UTC) + timedelta(hours=1), timeout_s=5
    )
    assert wt.logins == 1 and source.logins == 1


def test_watttime_forecast_is_marginal_with_its_generation_time(wt: ApiServer) -> None:
    now = datetime.now(UTC)
    series = _wt(wt).forecast("PJM_DC", now, now + timedelta(hours=2), timeout_s=5)
    assert series.forecast and series.signal == "marginal"
    assert series.vintage.endswith("Z") and 24 <= len(series.points) <= 25
    assert "horizon_hours=2" in wt.requests[-1][0] and "signal_type=co2_moer" in wt.requests[-1][0]


def test_watttime_relogs_once_when_its_token_expires(wt: ApiServer) -> None:
    start = datetime(2024, 6, 1, tzinfo=UTC)
    source = _wt(wt)
    source.history("CAISO_NORTH", start, start + timedelta(hours=1), timeout_s=5)
    wt.expire_tokens()
    source.history("CAISO_NORTH", start, start + timedelta(hours=1), timeout_s=5)
    assert source.logins == 2
    paths = [p.split("?")[0] for p, _ in wt.requests]
    assert paths == ["/login", "/v3/historical", "/v3/historical", "/login", "/v3/historical"]


def test_watttime_refused_password_never_shows(wt: ApiServer) -> None:
    wrong = "wt-wrong-password-q8"
    with pytest.raises(IntensityUnavailable, match="HTTP 403") as info:
        _wt(wt, password=wrong).history(
            "CAISO_NORTH",
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2024, 1, 2, tzinfo=UTC),
            timeout_s=5,
        )
    assert wrong not in str(info.value)
    with pytest.raises(IntensityUnavailable, match="WATTTIME_USERNAME"):
        WattTimeSource.from_options({}, {"WATTTIME_API_URL": wt.url}).forecast(
            "X", datetime.now(UTC), datetime.now(UTC) + timedelta(hours=1), timeout_s=5
        )


def test_watttime_history_over_30_days_is_split(wt: ApiServer) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    series = _wt(wt).history("BPA", start, start + timedelta(days=40), timeout_s=10)
    assert len(series.points) == 40 * 24 * 12
    assert sum(p.startswith("/v3/historical") for p, _ in wt.requests) == 2


# --- Carbon Aware SDK -----------------------------------------------------------------------


def test_carbon_aware_sdk_history_and_forecast(sdk: ApiServer) -> None:
    start = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    source = _sdk(sdk)
    series = source.history("eastus", start, start + timedelta(minutes=30), timeout_s=5)
    assert [p.intensity_g_per_kwh for p in series.points] == [
        api.sdk_value(start + timedelta(minutes=5 * i)) for i in range(6)
    ]
    assert series.points[0].end - series.points[0].start == timedelta(minutes=5)
    assert "location=eastus" in sdk.requests[-1][0]
    now = datetime.now(UTC)
    ahead = source.forecast("eastus", now, now + timedelta(hours=1), timeout_s=5)
    assert ahead.forecast and ahead.resolution_s == 300 and 12 <= len(ahead.points) <= 13


def test_carbon_aware_sdk_signal_option() -> None:
    assert CarbonAwareSdkSource.from_options({"signal": "marginal"}, {}).signal == "marginal"
    with pytest.raises(ConfigError, match="intensity.signal"):
        CarbonAwareSdkSource.from_options({"signal": "median"}, {})


# --- GB Carbon Intensity --------------------------------------------------------------------


def test_uk_national_history_prefers_actual(uk: ApiServer) -> None:
    start = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    series = _uk(uk).history("GB", start, start + timedelta(hours=2), timeout_s=5)
    assert len(series.points) == 4 and series.resolution_s == 1800
    assert series.points[0].intensity_g_per_kwh == api.uk_value(start, True)
    assert uk.requests[-1][0] == "/intensity/2024-05-01T10:00Z/2024-05-01T12:00Z"


def test_uk_national_forecast_uses_fw48h(uk: ApiServer) -> None:
    now = datetime.now(UTC)
    series = _uk(uk).forecast("GB", now, now + timedelta(hours=3), timeout_s=5)
    assert series.forecast and 6 <= len(series.points) <= 7
    assert uk.requests[-1][0].endswith("/fw48h")


def test_uk_regional_by_zone_option_and_postcode(uk: ApiServer) -> None:
    start = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    end = start + timedelta(hours=1)
    _uk(uk).history("GB-REGION-13", start, end, timeout_s=5)
    assert uk.requests[-1][0].endswith("/regionid/13")
    series = _uk(uk, postcode="RG10 8AB").history("GB", start, end, timeout_s=5)
    assert uk.requests[-1][0].endswith("/postcode/RG10")
    assert series.points[0].intensity_g_per_kwh == api.uk_value(start, False)
    _uk(uk, region_id=3).forecast("GB", start, end, timeout_s=5)
    assert uk.requests[-1][0] == "/regional/intensity/2024-05-01T10:00Z/fw48h/regionid/3"


def test_uk_refuses_zones_outside_great_britain_and_bad_options(uk: ApiServer) -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(IntensityUnavailable, match="not in Great Britain"):
        _uk(uk).history("FR", start, start + timedelta(hours=1), timeout_s=5)
    with pytest.raises(IntensityUnavailable, match="1 to 17"):
        _uk(uk).history("GB-REGION-99", start, start + timedelta(hours=1), timeout_s=5)
    with pytest.raises(ConfigError, match="intensity.region_id"):
        _uk(uk, region_id=40)
    assert uk.requests == []


def test_uk_history_over_14_days_is_split(uk: ApiServer) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    series = _uk(uk).history("GB", start, start + timedelta(days=20), timeout_s=10)
    assert len(series.points) == 20 * 48 and len(uk.requests) == 2


# --- Failures: every one is IntensityUnavailable, fast, with no secret in it -----------------

FAILURES = ["401", "429", "500", "503", "malformed", "wrong-shape", "body:[]", "body:null"]


def _call_all(
    em: ApiServer, wt: ApiServer, sdk: ApiServer, uk: ApiServer
) -> list[tuple[str, object]]:
    start = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    end = start + timedelta(hours=1)
    return [
        ("em", lambda t: _em(em).history("DE", start, end, timeout_s=t)),
        ("wt", lambda t: _wt(wt).history("CAISO_NORTH", start, end, timeout_s=t)),
        ("sdk", lambda t: _sdk(sdk).history("eastus", start, end, timeout_s=t)),
        ("uk", lambda t: _uk(uk).history("GB", start, end, timeout_s=t)),
    ]


@pytest.mark.parametrize("mode", FAILURES)
def test_every_failure_is_unavailable_and_redacted(
    mode: str, em: ApiServer, wt: ApiServer, sdk: ApiServer, uk: ApiServer
) -> None:
    for server in (em, wt, sdk, uk):
        server.mode = mode
    for name, call in _call_all(em, wt, sdk, uk):
        began = time.monotonic()
        with pytest.raises(IntensityUnavailable) as info:
            call(5)  # type: ignore[operator]
        message = str(info.value)
        assert time.monotonic() - began < 3, (name, mode)
        for secret in (*SECRETS, "wt-token-", "Basic "):
            assert secret not in message, (name, mode, message)


def test_retry_after_within_the_deadline_is_honoured(em: ApiServer) -> None:
    em.mode = "retry"
    now = datetime.now(UTC)
    series = _em(em).forecast("BE", now, now + timedelta(hours=1), timeout_s=5)
    assert series.points and len(em.requests) == 2


def test_a_hanging_server_costs_the_deadline_and_no_more(
    em: ApiServer, wt: ApiServer, sdk: ApiServer, uk: ApiServer
) -> None:
    for server in (em, wt, sdk, uk):
        server.mode = "hang"
    for name, call in _call_all(em, wt, sdk, uk):
        began = time.monotonic()
        with pytest.raises(IntensityUnavailable, match="deadline"):
            call(0.3)  # type: ignore[operator]
        assert time.monotonic() - began < 2.0, name


def test_a_closed_port_is_unavailable() -> None:
    env = {"ELECTRICITYMAPS_API_URL": "http://127.0.0.1:9", "ELECTRICITYMAPS_API_TOKEN": "tok-abc"}
    source = open_source("electricitymaps", {}, env)
    with pytest.raises(IntensityUnavailable, match="connection failed"):
        source.latest("BE", timeout_s=2)


def test_repr_never_shows_credentials(em: ApiServer, wt: ApiServer) -> None:
    assert api.EM_TOKEN not in repr(_em(em))
    assert api.WT_PASSWORD not in repr(_wt(wt)) and api.WT_USER not in repr(_wt(wt))
