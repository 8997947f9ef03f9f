"""Grid carbon intensity for cloud regions, countries and the world, from ``data/intensity.csv``.

A lookup falls back from the cloud region's own published figure, to its country's average, to
the world average, and every answer says which of the three it is and where the number came from.
The table is read on first use and cached, so importing this module reads no file.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from pathlib import Path

from carbonpipe.intensity.base import Intensity

PROVIDERS = ("gcp", "aws", "azure")
DATA_FILE = Path(__file__).parent / "data" / "intensity.csv"
COLUMNS = (
    "provider",
    "region",
    "location_name",
    "country_iso",
    "country_iso2",
    "latitude",
    "longitude",
    "intensity_g_per_kwh",
    "source",
    "vintage",
    "note",
)
WORLD = "WORLD"

_ROW_PROVIDERS = (*PROVIDERS, "country", "world")
_PROVIDER_LABELS = {"gcp": "GCP", "aws": "AWS", "azure": "Azure"}
_ALPHA3 = re.compile(r"^[A-Z]{3}$")
_ALPHA2 = re.compile(r"^[A-Z]{2}$")
_COUNTRY_ARG = re.compile(r"^[A-Za-z]{2,3}$")
_GCP_ZONE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")
_AWS_ZONE = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]$")
_AZURE_SEPARATORS = re.compile(r"[\s_\-]+")
_DEFAULT_MIN_SAVING_PERCENT = 10.0
_TIME_SHIFT_TEXT = (
    "Time-shifting: grid intensity changes through the day, but carbonpipe has no hourly data "
    "for this location, so it cannot estimate what a later start would save."
)


@dataclass(frozen=True)
class RegionInfo:
    """One cloud region: where it is and, where one is published, its own intensity."""

    provider: str
    region: str
    location_name: str
    country_iso: str
    latitude: float
    longitude: float
    intensity_g_per_kwh: float | None
    source: str
    vintage: str


@dataclass(frozen=True)
class CountryInfo:
    """One country's (or the world's) average grid intensity."""

    country_iso: str  # ISO 3166-1 alpha-3, or "WORLD"
    country_iso2: str
    name: str
    intensity_g_per_kwh: float
    source: str
    vintage: str


@dataclass(frozen=True)
class Recommendation:
    """One piece of advice for a lower-carbon step; ``str()`` gives the sentence."""

    kind: str  # "region" | "time_shift"
    text: str
    provider: str | None
    region: str | None
    intensity_g_per_kwh: float | None
    saving_percent: float | None

    def __str__(self) -> str:
        return self.text


class IntensityTable:
    """The validated contents of an intensity file, indexed for lookups."""

    def __init__(
        self, regions: Iterable[RegionInfo], countries: Iterable[CountryInfo], world: CountryInfo
    ) -> None:
        self.regions: tuple[RegionInfo, ...] = tuple(regions)
        self.countries: tuple[CountryInfo, ...] = tuple(countries)
        self.world = world
        self._by_region = {(r.provider, r.region): r for r in self.regions}
        self._by_iso: dict[str, CountryInfo] = {}
        for country in self.countries:
            self._by_iso[country.country_iso] = country
            self._by_iso[country.country_iso2] = country
        self._anchors = _country_anchors(self.regions)

    def region(self, provider: str, region: str) -> RegionInfo | None:
        """Return the row of a normalised (provider, region), or None."""
        return self._by_region.get((provider, region))

    def country(self, iso: str) -> CountryInfo | None:
        """Return the row of an upper-case alpha-2 or alpha-3 code, or None."""
        return self._by_iso.get(iso)

    def anchor(self, iso: str) -> tuple[float, float] | None:
        """Return the mean position of the cloud regions in a country, or None."""
        return self._anchors.get(iso)

    def lookup(
        self, provider: str | None, region: str | None, country_iso: str | None
    ) -> Intensity:
        """Resolve normalised arguments: region figure, else country average, else world."""
        row = self.region(provider, region) if provider and region else None
        if row is not None and row.intensity_g_per_kwh is not None:
            return Intensity(
                row.intensity_g_per_kwh,
                row.source,
                row.vintage,
                "cloud_region",
                f"{row.provider}:{row.region}",
            )
        for iso in (country_iso, row.country_iso if row else None):
            country = self.country(iso) if iso else None
            if country is not None:
                return _country_intensity(country, "country")
        return _country_intensity(self.world, "world")


def load_table(path: str | Path | None = None) -> IntensityTable:
    """Parse and validate an intensity file; the packaged one (cached) when ``path`` is None."""
    if path is None:
        return _default_table()
    return _parse(Path(path))


def lookup_intensity(
    provider: str | None, region: str | None, country_iso: str | None = None
) -> Intensity:
    """Return the intensity for a location: cloud region, else country, else world average.

    Unknown region names and unknown (well-formed) country codes fall back and never raise;
    ``country_iso`` takes ISO 3166-1 alpha-2 or alpha-3, in any case.
    """
    p = _check_provider(provider)
    r = _check_region(p, region)
    c = _check_country(country_iso)
    return _default_table().lookup(p, r, c)


def country_for_region(provider: str | None, region: str | None) -> str | None:
    """Return the ISO alpha-3 country of a cloud region, or None when it is not in the table."""
    p = _check_provider(provider)
    r = _check_region(p, region)
    row = _default_table().region(p, r) if p and r else None
    return row.country_iso if row else None


def regions(provider: str | None = None) -> list[RegionInfo]:
    """Return the cloud regions in the table, of one provider or of all."""
    p = _check_provider(provider)
    return [r for r in _default_table().regions if p is None or r.provider == p]


def regional_recommendations(
    provider: str | None,
    region: str | None,
    *,
    country_iso: str | None = None,
    limit: int = 3,
    min_saving_percent: float = _DEFAULT_MIN_SAVING_PERCENT,
) -> list[Recommendation]:
    """Suggest lower-intensity regions, nearest first, with savings computed from the table.

    On a known region the candidates are the same provider's other regions; on an unknown
    region the reference is its country's (or the world) average, ranked from the country's
    cloud regions when it has any, else by intensity. Without a provider all three providers
    are candidates. A time-shifting note closes the list; with no hourly data it has no number.
    """
    p = _check_provider(provider)
    r = _check_region(p, region)
    c = _check_country(country_iso)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if isinstance(min_saving_percent, bool) or not isinstance(min_saving_percent, Real):
        raise TypeError(
            f"min_saving_percent must be a number, got {type(min_saving_percent).__name__}"
        )
    if not 0 <= float(min_saving_percent) < 100:
        raise ValueError(f"min_saving_percent must be in [0, 100), got {min_saving_percent}")

    table = _default_table()
    current = table.lookup(p, r, c)
    row = table.region(p, r) if p and r else None
    if row is not None:
        anchor: tuple[float, float] | None = (row.latitude, row.longitude)
        reference = _region_label(row, current)
    else:
        anchor = table.anchor(current.zone) if current.kind == "country" else None
        reference = _average_label(table, current)

    home = row.country_iso if row else (current.zone if current.kind == "country" else None)
    candidates: list[tuple[RegionInfo, Intensity, float]] = []
    for cand in table.regions:
        if (p is not None and cand.provider != p) or cand is row:
            continue
        value = table.lookup(cand.provider, cand.region, None)
        if value.kind == "world":
            continue
        if cand.country_iso == home and "country" in (current.kind, value.kind):
            # Within one country a national average set against another figure for the same
            # grid differs by source and year, not by location: that is no saving to offer.
            continue
        saving = _saving_percent(current.intensity_g_per_kwh, value.intensity_g_per_kwh)
        if saving > 0 and saving >= min_saving_percent:
            candidates.append((cand, value, saving))

    def order(item: tuple[RegionInfo, Intensity, float]) -> tuple[float, float, str, str]:
        cand, value, _ = item
        distance = _central_angle(anchor, (cand.latitude, cand.longitude)) if anchor else 0.0
        return (distance, value.intensity_g_per_kwh, cand.provider, cand.region)

    candidates.sort(key=order)
    out = []
    for cand, value, saving in candidates[:limit]:
        target = _region_label(cand, value)
        if row is None:
            target = f"{_PROVIDER_LABELS[cand.provider]} {target}"
        verb = "Consider migrating to" if row is not None else "Consider running in"
        text = (
            f"{verb} {target}: {_format_percent(saving)}% lower carbon intensity than {reference}."
        )
        out.append(
            Recommendation(
                "region", text, cand.provider, cand.region, value.intensity_g_per_kwh, saving
            )
        )
    out.append(Recommendation("time_shift", _TIME_SHIFT_TEXT, p, r, None, None))
    return out


def format_g_per_kwh(value: float) -> str:
    """Format an intensity for a sentence: whole grams from 10 g/kWh up, one decimal below."""
    return f"{value:.0f}" if round(value, 1) >= 10 else f"{value:.1f}"


def _check_provider(provider: object) -> str | None:
    if provider is None:
        return None
    if not isinstance(provider, str):
        raise TypeError(f"provider must be a str or None, got {type(provider).__name__}")
    p = provider.strip().lower()
    if not p:
        return None
    if p not in PROVIDERS:
        raise ValueError(
            f"provider must be one of {', '.join(PROVIDERS)} or None, got {provider!r}"
        )
    return p


def _check_region(provider: str | None, region: object) -> str | None:
    if region is None:
        return None
    if not isinstance(region, str):
        raise TypeError(f"region must be a str or None, got {type(region).__name__}")
    return _normalise_region(provider, region) or None


def _check_country(country_iso: object) -> str | None:
    if country_iso is None:
        return None
    if not isinstance(country_iso, str):
        raise TypeError(f"country_iso must be a str or None, got {type(country_iso).__name__}")
    iso = country_iso.strip()
    if not iso:
        return None
    if not _COUNTRY_ARG.match(iso):
        raise ValueError(
            "country_iso must be an ISO 3166-1 alpha-2 or alpha-3 code such as 'FR' or 'FRA', "
            f"got {country_iso!r}"
        )
    return iso.upper()


def _normalise_region(provider: str | None, region: str) -> str:
    """Map the spellings callers meet (zones, display names) onto the table's region names."""
    r = region.strip().lower()
    if provider == "azure":
        return _AZURE_SEPARATORS.sub("", r)
    zone = {"gcp": _GCP_ZONE, "aws": _AWS_ZONE}.get(provider or "")
    match = zone.match(r) if zone else None
    return match.group(1) if match else r


def _country_intensity(country: CountryInfo, kind: str) -> Intensity:
    return Intensity(
        country.intensity_g_per_kwh, country.source, country.vintage, kind, country.country_iso
    )


def _country_anchors(rows: Iterable[RegionInfo]) -> dict[str, tuple[float, float]]:
    groups: dict[str, list[RegionInfo]] = {}
    for row in rows:
        groups.setdefault(row.country_iso, []).append(row)
    return {
        iso: (
            sum(r.latitude for r in members) / len(members),
            sum(r.longitude for r in members) / len(members),
        )
        for iso, members in groups.items()
    }


def _central_angle(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle angle between two (lat, lon) points, in radians (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * math.asin(min(1.0, math.sqrt(h)))


def _saving_percent(reference: float, candidate: float) -> float:
    return (reference - candidate) / reference * 100 if reference > 0 else 0.0


def _format_percent(value: float) -> str:
    return f"{value:.1f}" if 99.5 <= value < 100 else f"{value:.0f}"


def _region_label(row: RegionInfo, value: Intensity) -> str:
    basis = ", country average" if value.kind == "country" else ""
    grams = format_g_per_kwh(value.intensity_g_per_kwh)
    return f"{row.region} ({row.location_name}; {grams} g/kWh{basis})"


def _average_label(table: IntensityTable, value: Intensity) -> str:
    grams = format_g_per_kwh(value.intensity_g_per_kwh)
    if value.kind == "country":
        country = table.country(value.zone)
        name = country.name if country else value.zone
        return f"the {name} grid average ({grams} g/kWh)"
    return f"the world average ({grams} g/kWh)"


@lru_cache(maxsize=1)
def _default_table() -> IntensityTable:
    return _parse(DATA_FILE)


class _Row:
    """Reads one data row's cells and reports a bad one by file, line and column."""

    def __init__(self, path: Path, line: int, cells: dict[str, str]) -> None:
        self.path, self.line, self.cells = path, line, cells

    def error(self, column: str, problem: str) -> ValueError:
        value = self.cells.get(column, "")
        return ValueError(
            f"{self.path} line {self.line}, column {column!r}: {problem} (got {value!r})"
        )

    def text(self, column: str, *, required: bool = True) -> str:
        value = self.cells[column]
        if value != value.strip():
            raise self.error(column, "must not have surrounding spaces")
        if required and not value:
            raise self.error(column, "must not be empty")
        return value

    def empty(self, column: str, why: str) -> None:
        if self.cells[column]:
            raise self.error(column, f"must be empty {why}")

    def number(self, column: str, low: float, high: float) -> float:
        raw = self.text(column)
        try:
            value = float(raw)
        except ValueError:
            raise self.error(column, "must be a number") from None
        if not math.isfinite(value):
            raise self.error(column, "must be a finite number")
        if not low <= value <= high:
            raise self.error(column, f"must be between {low:g} and {high:g}")
        return value

    def positive(self, column: str) -> float:
        value = self.number(column, -math.inf, math.inf)
        if value <= 0:
            raise self.error(column, "must be a positive number")
        return value

    def pattern(self, column: str, regex: re.Pattern[str], what: str) -> str:
        value = self.text(column)
        if not regex.match(value):
            raise self.error(column, f"must be {what}")
        return value


def _parse(path: Path) -> IntensityTable:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read intensity file {path}: {exc}") from exc
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"{path}: no header row")
    header_line, header_text = lines[0]
    header = next(csv.reader([header_text]))
    missing = [c for c in COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        raise ValueError(
            f"{path} line {header_line}: header must have the columns {', '.join(COLUMNS)}; "
            f"missing {missing}, unknown {unknown}"
        )

    region_rows: list[RegionInfo] = []
    countries: list[CountryInfo] = []
    world: CountryInfo | None = None
    seen: dict[tuple[str, str], int] = {}
    seen_iso2: dict[str, int] = {}
    # One reader for every row (a row is one line: no field spans lines in this file).
    for (number, _), values in zip(
        lines[1:], csv.reader(line for _, line in lines[1:]), strict=True
    ):
        if len(values) != len(header):
            raise ValueError(
                f"{path} line {number}: expected {len(header)} fields, found {len(values)}"
            )
        row = _Row(path, number, dict(zip(header, values, strict=True)))
        provider = row.text("provider")
        if provider not in _ROW_PROVIDERS:
            raise row.error("provider", f"must be one of {', '.join(_ROW_PROVIDERS)}")
        region = row.text("region")
        if (provider, region) in seen:
            raise row.error("region", f"duplicates line {seen[(provider, region)]}")
        seen[(provider, region)] = number
        name = row.text("location_name")

        if provider in PROVIDERS:
            if _normalise_region(provider, region) != region:
                raise row.error("region", "must be written the way the provider's API names it")
            iso = row.pattern("country_iso", _ALPHA3, "an upper-case ISO 3166-1 alpha-3 code")
            row.empty("country_iso2", "on cloud rows")
            latitude = row.number("latitude", -90, 90)
            longitude = row.number("longitude", -180, 180)
            if row.cells["intensity_g_per_kwh"]:
                intensity: float | None = row.positive("intensity_g_per_kwh")
                source, vintage = row.text("source"), row.text("vintage")
            else:
                why = "when intensity_g_per_kwh is empty (a location-only row)"
                row.empty("source", why)
                row.empty("vintage", why)
                intensity, source, vintage = None, "", ""
            region_rows.append(
                RegionInfo(
                    provider, region, name, iso, latitude, longitude, intensity, source, vintage
                )
            )
            continue

        for column in ("latitude", "longitude"):
            row.empty(column, f"on {provider} rows")
        intensity_value = row.positive("intensity_g_per_kwh")
        source, vintage = row.text("source"), row.text("vintage")
        if provider == "world":
            if region != WORLD:
                raise row.error("region", f"must be {WORLD} on the world row")
            row.empty("country_iso", "on the world row")
            row.empty("country_iso2", "on the world row")
            if world is not None:
                raise row.error("provider", "only one world row is allowed")
            world = CountryInfo(WORLD, "", name, intensity_value, source, vintage)
            continue

        iso = row.pattern("country_iso", _ALPHA3, "an upper-case ISO 3166-1 alpha-3 code")
        if region != iso:
            raise row.error("region", "must repeat country_iso on country rows")
        iso2 = row.pattern("country_iso2", _ALPHA2, "an upper-case ISO 3166-1 alpha-2 code")
        if iso2 in seen_iso2:
            raise row.error("country_iso2", f"duplicates line {seen_iso2[iso2]}")
        seen_iso2[iso2] = number
        countries.append(CountryInfo(iso, iso2, name, intensity_value, source, vintage))

    if world is None:
        raise ValueError(f"{path}: no world row (provider 'world', region '{WORLD}')")
    return IntensityTable(region_rows, countries, world)
