"""Every answer of a live source kept on disk: history for ever, forecasts until their next update.

One JSON file per (source, zone, kind) in ``<cache folder>/intensity/`` (the cache folder:
``CARBONPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/carbonpipe``, else ``~/.cache/carbonpipe``),
a private folder (``0700``, this user's, see :mod:`carbonpipe._private`); files are ``0600`` and
replaced atomically. They hold points, the ranges those points answer and when they were
fetched; never a URL, a header or a credential.

* ``history``: measured points never change, so they are merged and kept; a request is answered
  from disk when one answered range holds it (a range is only recorded as far as its last
  point, so an hour not yet published is asked for again), or when it reaches less than one
  point resolution past such a range that was answered in the current resolution (a step's
  stop asks up to "now": the source can have published nothing newer since).
* ``forecast`` (and ``latest``): kept until the next update, the end of the point resolution in
  which they were fetched (hourly for Electricity Maps, half-hourly for the UK, 5 minutes for
  WattTime), and answered only for a range inside the one that was asked for.

A file that cannot be read as a cache file is ignored, named in :attr:`IntensityCache.problems`
(the caller puts that in ``tracking_errors``) and rewritten by the next answer. A warm hit
costs one ``stat`` when the file is unchanged since this process last read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from carbonpipe.errors import IntensityUnavailable, UnsafeFolder
from carbonpipe.intensity.base import IntensityPoint, IntensitySeries

__all__ = [
    "CACHE_DIR_ENV",
    "CachedSource",
    "IntensityCache",
    "default_cache_dir",
    "open_cached_source",
]

CACHE_DIR_ENV = "CARBONPIPE_CACHE_DIR"
_FORMAT = "carbonpipe.intensity-cache/1"
FORECAST_PAD = timedelta(hours=1)
# After a source fails, calls to it in this process fail at once for this long: a pipeline of
# many steps in one worker pays a down API's deadline once, not at every step's stop.
QUIET_AFTER_FAILURE_S = 60.0
_failed: dict[str, tuple[float, str]] = {}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``<cache folder>/intensity``: ``CARBONPIPE_CACHE_DIR`` > ``XDG_CACHE_HOME`` > ``~/.cache``."""
    environ = os.environ if env is None else env
    base = environ.get(CACHE_DIR_ENV)
    if base:
        return Path(base).expanduser() / "intensity"
    xdg = environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "carbonpipe" / "intensity"


def _epoch(when: datetime) -> float:
    return when.timestamp()


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _merge(ranges: list[list[float]]) -> list[list[float]]:
    out: list[list[float]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


class IntensityCache:
    """The on-disk cache of one folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self.problems: list[str] = []
        self._memo: dict[Path, tuple[int, int, dict[str, Any]]] = {}
        self._ready = False

    def _path(self, source: str, zone: str, kind: str) -> Path:
        digest = hashlib.sha256(f"{source}\0{zone}\0{kind}".encode()).hexdigest()[:16]
        label = _SAFE.sub("_", f"{source}-{zone}")[:60]
        return self.folder / f"{label}-{kind}-{digest}.json"

    def _ensure_folder(self) -> None:
        if not self._ready:
            from carbonpipe._private import ensure_private_dir

            ensure_private_dir(self.folder, what="intensity cache folder", env=CACHE_DIR_ENV)
            self._ready = True

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        memo = self._memo.get(path)
        if memo is not None and memo[0] == st.st_mtime_ns and memo[1] == st.st_size:
            return memo[2]
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise ValueError("not a carbonpipe intensity cache file")
            for p in data["points"]:
                if not (isinstance(p, list) and len(p) == 3 and p[0] < p[1]):
                    raise ValueError("a point is malformed")
            float(data["resolution_s"])
            str(data["signal"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = (
                f"intensity cache file {path.name} is unreadable ({type(exc).__name__}); "
                "ignored and rewritten"
            )
            if problem not in self.problems:
                self.problems.append(problem)
            return None
        self._memo[path] = (st.st_mtime_ns, st.st_size, data)
        return data

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        try:
            self._ensure_folder()
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, separators=(",", ":"), allow_nan=False)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            st = os.stat(path)
            self._memo[path] = (st.st_mtime_ns, st.st_size, data)
        except (OSError, UnsafeFolder) as exc:
            self.problems.append(f"intensity cache not written ({type(exc).__name__}: {exc})")

    @staticmethod
    def _series(data: dict[str, Any], lo: float, hi: float) -> IntensitySeries | None:
        points = tuple(
            IntensityPoint(_dt(s), _dt(e), float(v))
            for s, e, v in data["points"]
            if e > lo and s < hi
        )
        if not points:
            return None
        return IntensitySeries(
            points=points,
            source_name=str(data["source"]),
            zone=str(data["zone"]),
            signal=str(data["signal"]),
            resolution_s=float(data["resolution_s"]),
            vintage=str(data.get("vintage", "")),
            forecast=bool(data.get("forecast", False)),
        )

    def get(
        self,
        source: str,
        zone: str,
        kind: str,
        start: datetime,
        end: datetime,
        *,
        now: float | None = None,
    ) -> IntensitySeries | None:
        """The cached answer for ``[start, end)``, or None (``kind``: history | forecast | latest)."""
        data = self._read(self._path(source, zone, kind))
        if data is None:
            return None
        lo, hi = _epoch(start), _epoch(end)
        if kind != "history":
            if (time.time() if now is None else now) >= float(data.get("expires", 0)):
                return None
            if kind == "latest":
                return self._series(data, float("-inf"), float("inf"))
        for a, b in data.get("ranges", []):
            if a <= lo and hi <= b:
                return self._series(data, lo, hi)
        if kind == "history" and self._recent_tail(data, lo, hi, now):
            return self._series(data, lo, hi)
        return None

    @staticmethod
    def _recent_tail(data: dict[str, Any], lo: float, hi: float, now: float | None) -> bool:
        """Whether a history request reaching past what was answered is still answered by it:
        it was asked in the current point resolution (so the source can have published no
        newer point since) and falls short of ``hi`` by less than one resolution (which pricing
        covers with the nearest point). A step's stop asks for ``[start, now)``: without this,
        every stop would ask the source again; with it, a zone's history is asked once per
        resolution (an hour for Electricity Maps) on a machine, however many steps stop."""
        resolution = max(float(data.get("resolution_s") or 0.0), 60.0)
        clock = time.time() if now is None else now
        fetched = float(data.get("fetched_at") or 0.0)
        if clock // resolution != fetched // resolution or hi > clock + resolution:
            return False
        return any(a <= lo and hi - b <= resolution for a, b in data.get("ranges", []))

    def put(
        self,
        series: IntensitySeries,
        kind: str,
        start: datetime,
        end: datetime,
        *,
        now: float | None = None,
    ) -> None:
        """Keep ``series``, the answer for ``[start, end)``."""
        path = self._path(series.source_name, series.zone, kind)
        fetched = time.time() if now is None else now
        new = [[_epoch(p.start), _epoch(p.end), p.intensity_g_per_kwh] for p in series.points]
        lo, hi = _epoch(start), _epoch(end)
        if kind == "history":
            hi = min(hi, new[-1][1]) if new else lo
            old = self._read(path) if path.exists() else None
            if old is not None and old.get("signal") == series.signal:
                by_start = {p[0]: p for p in old["points"]}
                by_start.update({p[0]: p for p in new})
                points = sorted(by_start.values())
                ranges = _merge([*old.get("ranges", []), [lo, hi]])
            else:
                points, ranges = new, [[lo, hi]]
            expires = None
        else:
            resolution = max(float(series.resolution_s), 60.0)
            expires = (fetched // resolution + 1) * resolution
            points, ranges = new, [[lo, hi]]
        data: dict[str, Any] = {
            "format": _FORMAT,
            "source": series.source_name,
            "zone": series.zone,
            "kind": kind,
            "signal": series.signal,
            "resolution_s": series.resolution_s,
            "vintage": series.vintage,
            "forecast": series.forecast,
            "fetched_at": fetched,
            "ranges": ranges,
            "points": points,
        }
        if expires is not None:
            data["expires"] = expires
        self._write(path, data)


class CachedSource:
    """A time-series source answered from :class:`IntensityCache` first.

    ``requests`` counts the calls that reached the source; ``cache.problems`` lists cache files
    that were ignored.
    """

    def __init__(self, source: Any, cache: IntensityCache | None = None) -> None:
        self.source = source
        self.name = str(source.name)
        self.cache = cache if cache is not None else IntensityCache()
        self.requests = 0

    def __repr__(self) -> str:
        return f"CachedSource({self.source!r}, folder={str(self.cache.folder)!r})"

    @property
    def _key(self) -> str:
        return repr(self.source)  # the source's name and URL; sources never show a credential

    def note_failure(self, message: str) -> None:
        """Remember that the source failed (a caller gave up waiting on it): for the next
        :data:`QUIET_AFTER_FAILURE_S` it is not asked again, as after any failure."""
        _failed[self._key] = (time.monotonic(), message)

    def _check_quiet(self) -> None:
        failed = _failed.get(self._key)
        if failed is None:
            return
        ago = time.monotonic() - failed[0]
        if ago < QUIET_AFTER_FAILURE_S:
            raise IntensityUnavailable(
                f"{failed[1]} ({ago:.0f} s ago; not asked again for {QUIET_AFTER_FAILURE_S:.0f} s)"
            )
        del _failed[self._key]

    def _answer(
        self, kind: str, zone: str, start: datetime, end: datetime, timeout_s: float
    ) -> IntensitySeries:
        hit = self.cache.get(self.name, zone, kind, start, end)
        if hit is not None:
            return hit
        self._check_quiet()
        self.requests += 1
        # A forecast is asked an hour further than wanted: until its next update (at most an
        # hour away), a caller asking again from a later "now" is answered from disk.
        asked = end + FORECAST_PAD if kind == "forecast" else end
        try:
            series: IntensitySeries = getattr(self.source, kind)(
                zone, start, asked, timeout_s=timeout_s
            )
        except IntensityUnavailable as exc:
            _failed[self._key] = (time.monotonic(), str(exc))
            raise
        self.cache.put(series, kind, start, asked)
        if asked == end:
            return series
        points = tuple(p for p in series.points if p.start < end)
        return replace(series, points=points) if points else series

    def history(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """The source's ``history``, from disk when it was answered before."""
        return self._answer("history", zone, start, end, timeout_s)

    def forecast(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """The source's ``forecast``, from disk until its next update."""
        return self._answer("forecast", zone, start, end, timeout_s)

    def latest(self, zone: str, *, timeout_s: float) -> IntensitySeries:
        """The source's ``latest`` (where it has one), from disk until its next update."""
        latest = getattr(self.source, "latest", None)
        if latest is None:
            raise IntensityUnavailable(f"{self.name}: has no latest figure")
        now = time.time()
        at = _dt(now)
        hit = self.cache.get(self.name, zone, "latest", at, at)
        if hit is not None:
            return hit
        self._check_quiet()
        self.requests += 1
        try:
            series: IntensitySeries = latest(zone, timeout_s=timeout_s)
        except IntensityUnavailable as exc:
            _failed[self._key] = (time.monotonic(), str(exc))
            raise
        self.cache.put(series, "latest", at, at, now=now)
        return series


def open_cached_source(
    spec: str,
    options: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CachedSource | None:
    """:func:`~carbonpipe.intensity.registry.open_source` behind the disk cache (None: ``table``).

    ``file:PATH`` is not cached (the file is its own cache).
    """
    from carbonpipe.intensity.registry import check_source_name, open_source

    source = open_source(spec, options, env)
    if source is None:
        return None
    name, _ = check_source_name(spec)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(env)
    if name == "file":
        return CachedSource(source, _NoCache(folder))
    return CachedSource(source, IntensityCache(folder))


class _NoCache(IntensityCache):
    def get(self, *args: Any, **kwargs: Any) -> IntensitySeries | None:
        return None

    def put(self, *args: Any, **kwargs: Any) -> None:
        return None
