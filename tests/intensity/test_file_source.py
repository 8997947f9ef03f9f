"""The file:PATH intensity source: CSV and Parquet rows at any resolution, validated, cached."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonpipe import CarbonTracker
from carbonpipe.config import Settings
from carbonpipe.errors import ConfigError, IntensityUnavailable
from carbonpipe.intensity.file import FileSource, load_file
from carbonpipe.intensity.registry import open_source

T0 = datetime(2026, 1, 5, 14, 0, tzinfo=timezone.utc)


def _write_csv(path: Path, rows: list[dict[str, object]], header: list[str] | None = None) -> Path:
    names = header or list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_parquet(path: Path, columns: dict[str, list[object]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_points_last_until_the_next_timestamp_of_their_zone(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "i.csv",
        [
            {"timestamp": "2026-01-05T14:00:00Z", "zone": "BE", "intensity_g_per_kwh": "100"},
            {"timestamp": "2026-01-05T14:00:00Z", "zone": "FR", "intensity_g_per_kwh": "30"},
            {"timestamp": "2026-01-05 16:00:00+01:00", "zone": "BE", "intensity_g_per_kwh": "200"},
            {
                "timestamp": str(int(T0.timestamp()) + 7200),
                "zone": "BE",
                "intensity_g_per_kwh": 300,
            },
        ],
    )
    source = open_source(f"file:{path}")
    assert isinstance(source, FileSource)
    series = source.history("BE", T0, T0 + timedelta(hours=5), timeout_s=1)
    assert (series.source_name, series.zone, series.signal) == ("file", "BE", "average")
    assert [(p.start, p.end, p.intensity_g_per_kwh) for p in series.points] == [
        (T0, T0 + timedelta(hours=1), 100.0),
        (T0 + timedelta(hours=1), T0 + timedelta(hours=2), 200.0),
        (T0 + timedelta(hours=2), T0 + timedelta(hours=3), 300.0),  # the last: one median step
    ]
    assert series.resolution_s == 3600.0
    assert series.at(T0 + timedelta(minutes=90)).intensity_g_per_kwh == 200.0
    # Only the overlapping points come back.
    inner = FileSource(path).history(
        "BE", T0 + timedelta(minutes=70), T0 + timedelta(minutes=80), timeout_s=1
    )
    assert [p.intensity_g_per_kwh for p in inner.points] == [200.0]
    assert FileSource(path).forecast("FR", T0, T0 + timedelta(seconds=1), timeout_s=1).forecast


def test_one_second_resolution_and_a_single_row(tmp_path: Path) -> None:
    rows = [
        {
            "timestamp": (T0 + timedelta(seconds=s)).isoformat(),
            "zone": "BE",
            "intensity_g_per_kwh": 100 if s < 3 else 400,
        }
        for s in range(6)
    ]
    rows.append({"timestamp": T0.isoformat(), "zone": "PL", "intensity_g_per_kwh": 700})
    path = _write_csv(tmp_path / "i.csv", rows)
    series = FileSource(path).history("BE", T0, T0 + timedelta(seconds=10), timeout_s=1)
    assert series.resolution_s == 1.0
    assert series.points[-1].end == T0 + timedelta(seconds=6)
    single = FileSource(path).history("PL", T0, T0 + timedelta(days=1), timeout_s=1)
    assert single.points[0].end == T0 + timedelta(hours=1)


def test_kind_column_marginal_and_average(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "i.csv",
        [
            {
                "timestamp": T0.isoformat(),
                "zone": "US-CAL-CISO",
                "intensity_g_per_kwh": 250,
                "kind": "average",
            },
            {
                "timestamp": T0.isoformat(),
                "zone": "US-CAL-CISO",
                "intensity_g_per_kwh": 450,
                "kind": "Marginal",
            },
            {
                "timestamp": T0.isoformat(),
                "zone": "US-TEX-ERCO",
                "intensity_g_per_kwh": 500,
                "kind": "marginal",
            },
            {"timestamp": T0.isoformat(), "zone": "DE", "intensity_g_per_kwh": 380, "kind": ""},
        ],
    )
    end = T0 + timedelta(minutes=1)
    both = FileSource(path).history("US-CAL-CISO", T0, end, timeout_s=1)
    assert (both.signal, both.points[0].intensity_g_per_kwh) == ("average", 250.0)
    marginal = FileSource(path, signal="marginal").history("US-CAL-CISO", T0, end, timeout_s=1)
    assert (marginal.signal, marginal.points[0].intensity_g_per_kwh) == ("marginal", 450.0)
    only = FileSource(path).history("US-TEX-ERCO", T0, end, timeout_s=1)
    assert only.signal == "marginal"
    assert FileSource(path).history("DE", T0, end, timeout_s=1).signal == "average"
    with pytest.raises(IntensityUnavailable, match="no average rows for zone 'US-TEX-ERCO'"):
        FileSource(path, signal="average").history("US-TEX-ERCO", T0, end, timeout_s=1)
    with pytest.raises(ConfigError, match="intensity.signal"):
        FileSource(path, signal="mean")


def test_parquet_with_timestamp_string_and_epoch_columns(tmp_path: Path) -> None:
    stamps = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    typed = _write_parquet(
        tmp_path / "typed.parquet",
        {
            "timestamp": [s.replace(tzinfo=None) for s in stamps],  # naive means UTC
            "zone": ["BE"] * 4,
            "intensity_g_per_kwh": [100.0, 150.0, 120.0, 90.0],
            "other": ["x"] * 4,
        },
    )
    epoch = _write_parquet(
        tmp_path / "epoch.bin",  # found by its magic bytes, not its name
        {
            "Timestamp": [s.timestamp() for s in stamps],
            "zone": ["BE"] * 4,
            "intensity_g_per_kwh": [100, 150, 120, 90],
            "kind": ["average"] * 4,
        },
    )
    for path in (typed, epoch):
        series = FileSource(path).history("BE", T0, T0 + timedelta(hours=2), timeout_s=1)
        assert [p.intensity_g_per_kwh for p in series.points] == [100.0, 150.0, 120.0, 90.0]
        assert series.resolution_s == 900.0
        assert series.points[-1].end == stamps[-1] + timedelta(minutes=15)


@pytest.mark.parametrize(
    ("rows", "where"),
    [
        (
            [["timestamp", "zone"], ["2026-01-05T14:00Z", "BE"]],
            "line 1, column intensity_g_per_kwh",
        ),
        (
            [["timestamp", "zone", "intensity_g_per_kwh"], ["yesterday", "BE", "1"]],
            "line 2, column timestamp",
        ),
        (
            [
                ["timestamp", "zone", "intensity_g_per_kwh"],
                ["2026-01-05T14:00Z", "BE", "1"],
                ["2026-01-05T15:00Z", "B E", "1"],
            ],
            "line 3, column zone",
        ),
        (
            [["timestamp", "zone", "intensity_g_per_kwh"], ["2026-01-05T14:00Z", "BE", "-1"]],
            "line 2, column intensity_g_per_kwh",
        ),
        (
            [["timestamp", "zone", "intensity_g_per_kwh"], ["2026-01-05T14:00Z", "BE", "nan"]],
            "line 2, column intensity_g_per_kwh",
        ),
        (
            [
                ["timestamp", "zone", "intensity_g_per_kwh", "kind"],
                ["2026-01-05T14:00Z", "BE", "1", "avg"],
            ],
            "line 2, column kind",
        ),
        (
            [
                ["timestamp", "zone", "intensity_g_per_kwh"],
                ["2026-01-05T14:00Z", "BE", "1"],
                ["2026-01-05T15:00+01:00", "BE", "2"],
            ],
            "line 3, column timestamp",
        ),
        ([["timestamp", "zone", "intensity_g_per_kwh"]], "no rows"),
    ],
)
def test_bad_rows_name_the_file_line_and_column(
    tmp_path: Path, rows: list[list[str]], where: str
) -> None:
    path = tmp_path / "bad.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    source = FileSource(path)
    with pytest.raises(ConfigError) as caught:
        source.validate()
    assert str(path) in str(caught.value) and where in str(caught.value)
    # At pricing time the same fault is an IntensityUnavailable (the step falls back).
    with pytest.raises(IntensityUnavailable, match=where):
        source.history("BE", T0, T0 + timedelta(hours=1), timeout_s=1)


def test_bad_parquet_row_and_missing_file(tmp_path: Path) -> None:
    path = _write_parquet(
        tmp_path / "bad.parquet",
        {
            "timestamp": ["2026-01-05T14:00Z", "2026-01-05T15:00Z"],
            "zone": ["BE", ""],
            "intensity_g_per_kwh": [1.0, 2.0],
        },
    )
    with pytest.raises(ConfigError, match="row 2, column zone"):
        FileSource(path).validate()
    with pytest.raises(IntensityUnavailable, match="cannot read it"):
        FileSource(tmp_path / "absent.csv").history("BE", T0, T0, timeout_s=1)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError, match="cannot read it"):
        FileSource(tmp_path / "junk.parquet").validate()


def test_zone_or_window_not_in_the_file_is_unavailable(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "i.csv",
        [{"timestamp": T0.isoformat(), "zone": "BE", "intensity_g_per_kwh": 100}],
    )
    with pytest.raises(IntensityUnavailable, match="zone 'FR'"):
        FileSource(path).history("FR", T0, T0 + timedelta(minutes=1), timeout_s=1)
    with pytest.raises(IntensityUnavailable, match="no average point"):
        FileSource(path).history("BE", T0 - timedelta(days=2), T0 - timedelta(days=1), timeout_s=1)


def test_loaded_once_and_reloaded_when_the_file_changes(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "i.csv",
        [{"timestamp": T0.isoformat(), "zone": "BE", "intensity_g_per_kwh": 100}],
    )
    first = load_file(path)
    assert load_file(path) is first
    _write_csv(
        path,
        [{"timestamp": T0.isoformat(), "zone": "BE", "intensity_g_per_kwh": 1000}],
    )
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_file(path)
    assert second is not first
    assert (
        second.window("BE", "average", T0, T0 + timedelta(seconds=1))[0].intensity_g_per_kwh
        == 1000.0
    )


_ZONES = st.sampled_from(["BE", "DE", "US-CAL-CISO", "GB", "IN-WE", "JP_TK"])
_ROWS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),  # seconds after T0
        _ZONES,
        st.floats(min_value=0, max_value=5000, allow_nan=False, allow_infinity=False),
        st.sampled_from(["average", "marginal", ""]),
        st.sampled_from(["iso", "epoch", "offset"]),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda r: (r[0], r[1], r[3] or "average"),
)


def _stamp(offset: int, style: str) -> str:
    when = T0 + timedelta(seconds=offset)
    if style == "epoch":
        return str(int(when.timestamp()))
    if style == "offset":
        return when.astimezone(timezone(timedelta(hours=-5))).isoformat()
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_ROWS, parquet=st.booleans())
def test_any_valid_rows_round_trip(tmp_path_factory: pytest.TempPathFactory, rows, parquet) -> None:
    folder = tmp_path_factory.mktemp("rt")
    if parquet:
        path = _write_parquet(
            folder / "i.parquet",
            {
                "timestamp": [_stamp(r[0], r[4]) for r in rows],
                "zone": [r[1] for r in rows],
                "intensity_g_per_kwh": [r[2] for r in rows],
                "kind": [r[3] for r in rows],
            },
        )
    else:
        path = _write_csv(
            folder / "i.csv",
            [
                {
                    "timestamp": _stamp(r[0], r[4]),
                    "zone": r[1],
                    "intensity_g_per_kwh": repr(r[2]),
                    "kind": r[3],
                }
                for r in rows
            ],
        )
    expected: dict[tuple[str, str], dict[int, float]] = {}
    for offset, zone, value, kind, _ in rows:
        expected.setdefault((zone, kind or "average"), {})[offset] = value
    for (zone, kind), by_offset in expected.items():
        series = FileSource(path, signal=kind).history(
            zone, T0, T0 + timedelta(seconds=10**6 + 1), timeout_s=1
        )
        offsets = sorted(by_offset)
        assert [p.start for p in series.points] == [T0 + timedelta(seconds=o) for o in offsets]
        assert [p.intensity_g_per_kwh for p in series.points] == [by_offset[o] for o in offsets]
        # Each point lasts until the next one; together they tile the span with no gap.
        assert all(a.end == b.start for a, b in zip(series.points, series.points[1:], strict=False))
        assert series.points[-1].end > series.points[-1].start
        assert series.signal == kind


# -- refused before the step starts ----------------------------------------------------------
# A bad file used to be found at the step's stop (hours later) and priced with the table; now
# the tracker and `carbonpipe run` read it first and refuse, naming the setting, file and line.

_HEADER = ["timestamp", "zone", "intensity_g_per_kwh"]
_BAD_FILES = {
    "intensity": ([_HEADER, ["2026-01-05T14:00Z", "BE", "100"], ["2026-01-05T15:00Z", "BE", "-5"]],
                  "line 3, column intensity_g_per_kwh"),
    "timestamp": ([_HEADER, ["2026-01-05T14:00Z", "BE", "100"], ["yesterday", "BE", "90"]],
                  "line 3, column timestamp"),
    "header": ([["timestamp", "zone", "g_per_kwh"], ["2026-01-05T14:00Z", "BE", "100"]],
               "line 1, column intensity_g_per_kwh"),
    "word": ([_HEADER, ["2026-01-05T14:00Z", "BE", "100"], ["2026-01-05T15:00Z", "BE", "lots"]],
             "line 3, column intensity_g_per_kwh: 'lots' is not a number"),
}  # fmt: skip


def _rows_file(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _now_file(path: Path, value: str = "100") -> Path:
    """Zone BE (gcp europe-west1) at ``value`` g/kWh from an hour ago to an hour from now."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return _rows_file(
        path,
        [_HEADER, *[[(now + timedelta(hours=h)).isoformat(), "BE", value] for h in (-1, 0, 1)]],
    )


def _cli_run(tmp_path: Path, env: dict[str, str], marker: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CARBONPIPE_INTENSITY_SOURCE",)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "carbonpipe",
            "run",
            "--store",
            str(tmp_path / "store"),
            "--provider",
            "gcp",
            "--region",
            "europe-west1",
            "--",
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w').close()",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
        cwd=tmp_path,
    )


@pytest.mark.parametrize("fault", [*_BAD_FILES, "missing"])
def test_carbonpipe_run_refuses_a_bad_file_before_the_command_starts(
    tmp_path: Path, fault: str
) -> None:
    if fault == "missing":
        grid, where = tmp_path / "absent.csv", "cannot read it (No such file or directory)"
    else:
        rows, where = _BAD_FILES[fault]
        grid = _rows_file(tmp_path / "grid.csv", rows)
    marker = tmp_path / "the-command-ran"
    out = _cli_run(tmp_path, {"CARBONPIPE_INTENSITY_SOURCE": f"file:{grid}"}, marker)
    assert out.returncode == 2, out.stderr
    assert not marker.exists()  # the command was never started
    assert not (tmp_path / "store").exists()  # nor was anything recorded
    message = out.stderr.strip()
    assert message.startswith("carbonpipe run: CARBONPIPE_INTENSITY_SOURCE: intensity file")
    assert repr(str(grid)) in message and where in message and "; fix: " in message


def test_carbonpipe_run_names_the_carbon_yaml_field_and_runs_with_a_good_file(
    tmp_path: Path,
) -> None:
    rows, where = _BAD_FILES["timestamp"]
    _rows_file(tmp_path / "grid.csv", rows)
    config = tmp_path / "carbon.yaml"
    config.write_text("intensity: {source: 'file:grid.csv'}\n")  # relative to the working dir
    marker = tmp_path / "the-command-ran"
    out = _cli_run(tmp_path, {"CARBONPIPE_CONFIG": str(config)}, marker)
    assert out.returncode == 2 and not marker.exists(), out.stderr
    assert f"intensity.source in {config}: intensity file 'grid.csv': {where}" in out.stderr
    assert "ISO-8601" in out.stderr  # the fix: what a timestamp may be
    _now_file(tmp_path / "grid.csv")  # fixed: the same line runs, priced from the file
    out = _cli_run(tmp_path, {"CARBONPIPE_CONFIG": str(config)}, marker)
    assert out.returncode == 0, out.stderr
    assert marker.exists()


def _file_tracker(tmp_path: Path) -> CarbonTracker:
    return CarbonTracker(
        project_name="p",
        output_dir=str(tmp_path / "store"),
        cloud_provider="gcp",
        cloud_region="europe-west1",
        measure_power_secs=0.5,
    )


def test_a_tracker_refuses_a_bad_file_before_a_step_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = _rows_file(tmp_path / "grid.csv", _BAD_FILES["intensity"][0])
    monkeypatch.setenv("CARBONPIPE_INTENSITY_SOURCE", f"file:{grid}")
    tracker = _file_tracker(tmp_path)
    ran = []
    with (
        pytest.raises(ConfigError, match="^CARBONPIPE_INTENSITY_SOURCE: .*line 3, column inten"),
        tracker.start_tracking("train"),
    ):
        ran.append("train")
    assert not ran and not (tmp_path / "store").exists()  # not run, nothing recorded
    _now_file(grid)
    with tracker.start_tracking("train"):
        sum(range(1000))
    metrics = tracker.stop_tracking("train")
    source = metrics.record.intensity_source
    assert (source["kind"], source["name"], source["zone"]) == ("timeseries", "file", "BE")
    assert metrics.record.intensity_g_per_kwh == pytest.approx(100.0, rel=0.05)
    # The file goes bad between steps: the next step is refused before it starts ...
    _now_file(grid, value="a lot")
    stat = grid.stat()
    os.utime(grid, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ConfigError, match="'a lot' is not a number; fix: write g CO2e per kWh"):
        tracker.start_tracking("eval")
    # ... and, fixed again, it runs under the same name.
    _now_file(grid, value="200")
    os.utime(grid, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    with tracker.start_tracking("eval"):
        pass
    assert tracker.stop_tracking("eval").record.intensity_g_per_kwh == pytest.approx(
        200.0, rel=0.05
    )


def test_other_sources_are_not_read_or_contacted_at_start(tmp_path: Path) -> None:
    # A network source is asked at the step's stop only; nothing of it is even imported when
    # the tracker is built, and a step with no intensity source loads no file machinery.
    script = (
        "import json, sys\n"
        "from carbonpipe import CarbonTracker\n"
        f"CarbonTracker(output_dir={str(tmp_path / 'store')!r}, cloud_provider='gcp',\n"
        "              cloud_region='europe-west1')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('carbonpipe.intens'))))\n"
    )
    for source in ("electricitymaps", "watttime", "uk", "table"):
        env = {**os.environ, "CARBONPIPE_INTENSITY_SOURCE": source}
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
        )
        assert out.returncode == 0, out.stderr
        loaded = json.loads(out.stdout.strip().splitlines()[-1])
        for module in ("file", "timed", "http", "electricitymaps", "watttime", "uk"):
            assert f"carbonpipe.intensity.{module}" not in loaded, (source, module)


# Bytes a CSV parser may meet: the header's names, values good and bad, quotes, NULs, BOMs,
# Parquet's magic, timestamps at the edges of datetime (an offset at year 1 overflows UTC).
_TOKENS = st.sampled_from(
    [
        "timestamp", "zone", "intensity_g_per_kwh", "kind", "BE", "US-CAL-CISO", "average",
        "marginal", "", " ", "2026-01-05T14:00:00Z", "2026-01-05 15:00:00+01:00", "1767621600",
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "-1", "0", "5000", "5000.5",
        "nan", "inf", "1e400", "1_0", "True", '"', '""', "\x00", "\ufeff", "PAR1", "\r", "é",
    ]
)  # fmt: skip
_CELL = st.one_of(_TOKENS, st.text(max_size=8))
_LINE = st.lists(_CELL, max_size=6).map(",".join)
_CSVISH = st.tuples(st.booleans(), st.lists(_LINE, max_size=8)).map(
    lambda t: "\n".join(([",".join(_HEADER + ["kind"])] if t[0] else []) + t[1]).encode(
        "utf-8", "surrogatepass"
    )
)
_COUNTER = iter(range(10**9))


@settings(
    max_examples=200,
    deadline=timedelta(seconds=5),  # never hangs: at most 4 KiB read, however it is built
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.one_of(_CSVISH, st.binary(max_size=4096)))
def test_any_bytes_are_accepted_or_refused_with_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    folder = tmp_path_factory.getbasetemp() / "any-bytes"
    folder.mkdir(exist_ok=True)
    path = folder / f"grid-{next(_COUNTER)}.csv"  # a new file each time: never a cached one
    path.write_bytes(data[:4096])
    settings_ = Settings(intensity_source=f"file:{path}", sources={"intensity_source": "env"})
    try:
        settings_.check_intensity_source()
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"CARBONPIPE_INTENSITY_SOURCE: intensity file {str(path)!r}: ")
        assert "; fix: " in message and "set CARBONPIPE_INTENSITY_SOURCE to table" in message
    else:
        table = load_file(path)
        assert table.zones()  # accepted: it holds at least one good row
