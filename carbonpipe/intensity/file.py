"""The ``file:PATH`` source: timed grid intensities from a CSV or Parquet file you downloaded.

Columns (a header row names them; other columns are ignored; order does not matter):

``timestamp``
    When the value starts: ISO-8601 (``2026-01-05T14:00:00Z``, ``2026-01-05 14:00:00+01:00``;
    no offset means UTC) or Unix epoch seconds (``1767621600``). In Parquet, a timestamp
    column (naive means UTC), an ISO-8601 string or a number of epoch seconds.
``zone``
    The grid zone, as Electricity Maps names it (``BE``, ``DE``, ``US-CAL-CISO``, ``GB``).
``intensity_g_per_kwh``
    The intensity in g CO2e per kWh: a finite number, 0 to 5000.
``kind`` (optional)
    ``average`` (the default when the column is absent or blank: location-based accounting)
    or ``marginal`` (WattTime's MOER style: what one more kWh would emit).

Any resolution: a value holds from its timestamp until the next timestamp of the same zone and
kind; the last one holds for one median step of its zone (one hour when a zone has one row).
Two rows of the same zone, kind and timestamp are refused.

The file is read once per process and re-read only when its size or modification time changes.
A tracker, ``carbonpipe run`` and the components built on them read it before the step starts
(:func:`check_file_source`): a bad file is refused then, naming the setting, the file, the line
and column and the fix, not found hours later at the step's stop.
:meth:`FileSource.validate` raises :class:`~carbonpipe.errors.ConfigError` naming the file, the
line (CSV; the header is line 1) or row (Parquet, from 1) and the column of the first bad value;
:meth:`FileSource.history` and :meth:`FileSource.forecast` raise
:class:`~carbonpipe.errors.IntensityUnavailable` instead, so a step's pricing falls back to the
table. Both serve the file's points: the file is whatever you put in it.
"""

from __future__ import annotations

import bisect
import csv
import math
import re
import statistics
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from carbonpipe.errors import ConfigError, IntensityUnavailable
from carbonpipe.intensity.base import IntensityPoint, IntensitySeries

__all__ = ["COLUMNS", "KINDS", "FileSource", "FileTable", "check_file_source", "load_file"]

COLUMNS = ("timestamp", "zone", "intensity_g_per_kwh", "kind")
REQUIRED = COLUMNS[:3]
KINDS = ("average", "marginal")
MAX_INTENSITY = 5000.0
DEFAULT_STEP_S = 3600.0
_ZONE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_PARQUET_MAGIC = b"PAR1"
# Epoch seconds from 1970 to 9999: anything else is not a time this file can mean.
_EPOCH_MAX = 253402300799.0


@dataclass(frozen=True)
class _ZoneSeries:
    starts: tuple[datetime, ...]
    values: tuple[float, ...]
    step_s: float

    def points(self, first: int = 0, last: int | None = None) -> tuple[IntensityPoint, ...]:
        stop = len(self.starts) if last is None else min(last, len(self.starts))
        out = []
        for i in range(max(first, 0), stop):
            start = self.starts[i]
            if i + 1 < len(self.starts):
                end = self.starts[i + 1]
            else:
                end = start + timedelta(seconds=self.step_s)
            out.append(IntensityPoint(start, end, self.values[i]))
        return tuple(out)

    def window(self, start: datetime, end: datetime) -> tuple[IntensityPoint, ...]:
        """The points overlapping ``[start, end)``."""
        first = bisect.bisect_right(self.starts, start) - 1
        last = bisect.bisect_left(self.starts, end)
        return tuple(p for p in self.points(first, last) if p.end > start and p.start < end)


@dataclass(frozen=True)
class FileTable:
    """A validated intensity file: per (zone, kind), its points in time order."""

    path: str
    vintage: str
    series: Mapping[tuple[str, str], _ZoneSeries]

    def zones(self) -> list[str]:
        """The zones the file has, sorted."""
        return sorted({zone for zone, _ in self.series})

    def kinds(self, zone: str) -> list[str]:
        """The kinds (``average``/``marginal``) the file has for ``zone``."""
        return [kind for kind in KINDS if (zone, kind) in self.series]

    def points(self, zone: str, kind: str) -> tuple[IntensityPoint, ...]:
        """Every point of ``zone`` and ``kind`` (empty when the file has none)."""
        found = self.series.get((zone, kind))
        return found.points() if found is not None else ()

    def window(
        self, zone: str, kind: str, start: datetime, end: datetime
    ) -> tuple[IntensityPoint, ...]:
        """The points of ``zone`` and ``kind`` overlapping ``[start, end)``."""
        found = self.series.get((zone, kind))
        return found.window(start, end) if found is not None else ()

    def resolution_s(self, zone: str, kind: str) -> float:
        """The median step of ``zone`` and ``kind``."""
        found = self.series.get((zone, kind))
        return found.step_s if found is not None else DEFAULT_STEP_S


_HEADER_FIX = (
    "start the file with a header row naming timestamp, zone and intensity_g_per_kwh (kind "
    "optional), each once"
)
_FORMAT_FIX = "save it as a UTF-8 CSV file with a header row, or as a Parquet file"
# What to write instead of a bad value, by column.
_VALUE_FIX = {
    "timestamp": "write ISO-8601 (2026-01-05T14:00:00Z) or Unix epoch seconds",
    "zone": "write the grid zone as Electricity Maps names it (BE, DE, US-CAL-CISO)",
    "intensity_g_per_kwh": f"write g CO2e per kWh, a number from 0 to {MAX_INTENSITY:g}",
    "kind": "write average or marginal (blank means average)",
}


class _BadValue(ValueError):
    def __init__(self, where: str, column: str, message: str, fix: str | None = None) -> None:
        super().__init__(f"{where}, column {column}: {message}")
        self.fix = fix or _VALUE_FIX.get(column, _HEADER_FIX)


class _FileError(ConfigError):
    """A bad intensity file; ``fix`` says what to change."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def parse_timestamp(value: Any) -> datetime:
    """A cell to an aware UTC datetime: ISO-8601 text, epoch seconds or a datetime."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, bool):
        raise ValueError("not a time")
    elif isinstance(value, (int, float)):
        return _from_epoch(float(value))
    else:
        text = str(value).strip()
        if not text:
            raise ValueError("empty")
        try:
            return _from_epoch(float(text))
        except ValueError:
            pass
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text[:40]!r} is neither ISO-8601 nor epoch seconds") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    try:
        return stamp.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00: before the first UTC datetime
        raise ValueError(f"{stamp.isoformat()[:40]!r} is out of range in UTC") from None


def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds) or not 0 <= seconds <= _EPOCH_MAX:
        raise ValueError(f"{seconds!r} is not epoch seconds between 1970 and 9999")
    return datetime.fromtimestamp(seconds, timezone.utc)


def _parse_intensity(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("not a number")
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        raise ValueError(f"{str(value)[:40]!r} is not a number") from None
    if not math.isfinite(number) or not 0.0 <= number <= MAX_INTENSITY:
        raise ValueError(f"{number!r} is not a finite number from 0 to {MAX_INTENSITY:g}")
    return number


def _parse_zone(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    if not _ZONE.match(text):
        raise ValueError(f"{text[:40]!r} is not a zone name (letters, digits, - and _)")
    return text


def _parse_kind(value: Any) -> str:
    text = "" if value is None else str(value).strip().lower()
    if not text:
        return "average"
    if text not in KINDS:
        raise ValueError(f"{text[:40]!r} is neither average nor marginal")
    return text


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise _BadValue("line 1", "timestamp", "the file is empty", _HEADER_FIX) from None
        names = [name.strip().lower() for name in header]
        _check_header(names, "line 1")
        index = {name: names.index(name) for name in COLUMNS if name in names}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"line {reader.line_num}"
            cells = {name: (row[i] if i < len(row) else "") for name, i in index.items()}
            yield where, cells


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from carbonpipe._optional import needs_extra

    with needs_extra("esg", "Parquet intensity files"):
        import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = [name.strip().lower() for name in table.column_names]
    _check_header(names, "the schema")
    columns = {
        name: table.column(names.index(name)).to_pylist() for name in COLUMNS if name in names
    }
    for i in range(table.num_rows):
        yield f"row {i + 1}", {name: values[i] for name, values in columns.items()}


def _check_header(names: list[str], where: str) -> None:
    for name in REQUIRED:
        if name not in names:
            raise _BadValue(
                where, name, f"missing; the columns are {', '.join(COLUMNS)}", _HEADER_FIX
            )
    for name in COLUMNS:
        if names.count(name) > 1:
            raise _BadValue(where, name, "appears twice", _HEADER_FIX)


def _build(rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], _ZoneSeries]:
    seen: dict[tuple[str, str], dict[datetime, float]] = {}
    for where, cells in rows:
        parsed: dict[str, Any] = {}
        for column, parse in (
            ("timestamp", parse_timestamp),
            ("zone", _parse_zone),
            ("intensity_g_per_kwh", _parse_intensity),
            ("kind", _parse_kind),
        ):
            try:
                parsed[column] = parse(cells.get(column))
            except ValueError as exc:
                raise _BadValue(where, column, str(exc)) from None
        key = (parsed["zone"], parsed["kind"])
        by_time = seen.setdefault(key, {})
        if parsed["timestamp"] in by_time:
            raise _BadValue(
                where,
                "timestamp",
                f"{parsed['timestamp'].isoformat()} repeats for {key[0]} {key[1]}",
                "keep one row per zone, kind and timestamp",
            )
        by_time[parsed["timestamp"]] = parsed["intensity_g_per_kwh"]
    out: dict[tuple[str, str], _ZoneSeries] = {}
    for key, by_time in seen.items():
        starts = tuple(sorted(by_time))
        gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
        step = float(statistics.median(gaps)) if gaps else DEFAULT_STEP_S
        out[key] = _ZoneSeries(starts, tuple(by_time[s] for s in starts), step)
    return out


_CACHE: dict[str, tuple[tuple[int, int], FileTable]] = {}
_CACHE_LOCK = threading.Lock()


def load_file(path: str | Path) -> FileTable:
    """Read and validate ``path`` (cached per process until its size or mtime changes).

    Raises ``ConfigError`` naming the file, the line or row and the column of a bad value, or
    saying why the file cannot be read.
    """
    resolved = Path(path).expanduser()
    key = str(resolved.resolve()) if resolved.exists() else str(resolved)
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise _FileError(
            f"intensity file {str(path)!r}: cannot read it ({exc.strerror})", _path_fix(resolved)
        ) from None
    if not resolved.is_file():
        raise _FileError(
            f"intensity file {str(path)!r}: not a file",
            "name a CSV or Parquet file, not a folder",
        )
    signature = (stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
    try:
        with resolved.open("rb") as handle:
            magic = handle.read(4)
        rows = _parquet_rows(resolved) if magic == _PARQUET_MAGIC else _csv_rows(resolved)
        series = _build(rows)
    except _BadValue as exc:
        raise _FileError(f"intensity file {str(path)!r}: {exc}", exc.fix) from None
    except PermissionError as exc:
        raise _FileError(
            f"intensity file {str(path)!r}: cannot read it ({exc.strerror})",
            "make it readable by the user the step runs as",
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _FileError(
            f"intensity file {str(path)!r}: cannot read it ({exc})", _FORMAT_FIX
        ) from None
    except ConfigError:
        raise
    except Exception as exc:  # pyarrow's errors for a malformed Parquet file
        if type(exc).__name__ == "MissingDependency":
            raise
        raise _FileError(
            f"intensity file {str(path)!r}: cannot read it ({type(exc).__name__}: {exc})",
            _FORMAT_FIX,
        ) from None
    if not series:
        raise _FileError(
            f"intensity file {str(path)!r}: no rows",
            "add rows of timestamp, zone and intensity_g_per_kwh under the header",
        )
    vintage = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, timezone.utc).isoformat(
        timespec="seconds"
    )
    table = FileTable(str(path), vintage, series)
    with _CACHE_LOCK:
        _CACHE[key] = (signature, table)
    return table


def _path_fix(path: Path) -> str:
    if path.is_absolute():
        return "check the path, or copy the file there"
    import os

    return f"check the path (a relative path is read from the working directory, {os.getcwd()})"


def check_file_source(
    path: str, *, field: str, options: Mapping[str, Any] | None = None
) -> FileTable:
    """Read the ``file:PATH`` source a setting names before a step starts.

    Raises :class:`~carbonpipe.errors.ConfigError` naming ``field`` (the setting:
    ``CARBONPIPE_INTENSITY_SOURCE`` or carbon.yaml's ``intensity.source``), the file, the line
    and column of the first bad value and the fix. Cached: once per process while the file's
    size and modification time stay the same.
    """
    try:
        return FileSource.from_options({**(options or {}), "path": path}, {}).validate()
    except _FileError as exc:
        raise ConfigError(
            f"{field}: {exc}; fix: {exc.fix}, or set {field} to table (the annual figures)"
        ) from None


class FileSource:
    """A :class:`~carbonpipe.intensity.base.TimeSeriesSource` over one CSV or Parquet file.

    Args:
        path: the file.
        signal: ``average`` or ``marginal`` to serve only that kind; None (the default) serves
            a zone's average rows, or its marginal rows when it has no average ones.
    """

    name = "file"

    def __init__(self, path: str | Path, *, signal: str | None = None) -> None:
        self.path = str(path)
        if signal is not None and signal not in KINDS:
            raise ConfigError(f"intensity.signal: {signal!r} is neither average nor marginal")
        self.signal = signal

    @classmethod
    def from_options(cls, options: Mapping[str, Any], env: Mapping[str, str]) -> FileSource:
        """Build from carbon.yaml's ``intensity:`` fields (``path``, optional ``signal``)."""
        path = options.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError("intensity.source: 'file' needs a path: file:PATH")
        signal = options.get("signal")
        return cls(path.strip(), signal=str(signal).strip().lower() if signal else None)

    def validate(self) -> FileTable:
        """Load the file now; ``ConfigError`` names the file, line and column of a bad value."""
        return load_file(self.path)

    def history(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float = 10.0
    ) -> IntensitySeries:
        """The file's points of ``zone`` overlapping ``[start, end)``."""
        return self._series(zone, start, end, forecast=False)

    def forecast(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float = 10.0
    ) -> IntensitySeries:
        """The same points as :meth:`history`: a file holds whatever was put in it."""
        return self._series(zone, start, end, forecast=True)

    def _series(
        self, zone: str, start: datetime, end: datetime, *, forecast: bool
    ) -> IntensitySeries:
        try:
            table = load_file(self.path)
        except ConfigError as exc:
            raise IntensityUnavailable(str(exc)) from None
        kinds = table.kinds(zone)
        if self.signal is not None:
            kind = self.signal if self.signal in kinds else None
        else:
            kind = kinds[0] if kinds else None
        if kind is None:
            wanted = f"{self.signal} rows" if self.signal else "rows"
            raise IntensityUnavailable(
                f"intensity file {self.path!r} has no {wanted} for zone {zone!r}"
            )
        start_utc, end_utc = _utc(start), _utc(end)
        points = table.window(zone, kind, start_utc, end_utc)
        if not points:
            raise IntensityUnavailable(
                f"intensity file {self.path!r} has no {kind} point for zone {zone!r} between "
                f"{start_utc.isoformat()} and {end_utc.isoformat()}"
            )
        return IntensitySeries(
            points=points,
            source_name=self.name,
            zone=zone,
            signal=kind,
            resolution_s=table.resolution_s(zone, kind),
            vintage=table.vintage,
            forecast=forecast,
        )


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
