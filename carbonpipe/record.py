"""The step record: one immutable JSON document per step attempt (``carbonpipe.record/2``).

A record's id is derived from (project, pipeline, run, step, attempt), so a re-delivery of the
same attempt is the same record and lands on the same key. Records are stored Hive-style::

    records/v2/date=YYYY-MM-DD/pipeline_key=<partition_value(pipeline)>/<record_id>.json

The pipeline's folder is named ``pipeline_key``, not ``pipeline``: an engine that adds Hive
partition columns (DuckDB, Spark, Athena, BigQuery) then adds a column of its own beside the
record's ``pipeline`` field instead of shadowing it with the sanitised folder name, and no
record field is named ``date``. Earlier versions wrote ``records/v1/date=.../pipeline=.../``;
readers read both (a record in both is counted once) and ``carbonpipe migrate`` moves v1 to v2.

Every field is documented once, in the JSON Schema shipped with the package
(``carbonpipe/schemas/record.v2.json``). Every field is always written, with a typed ``null``
where it has no value, and every figure is written as a float (``0.0``, never ``0``), so a
reader that infers column types from a sample (DuckDB's ``read_json_auto``) infers DOUBLE and
VARCHAR, not BIGINT and NULL. Records of ``carbonpipe.record/1`` (ints for figures, optional
fields missing) are read and upgraded to that shape.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from carbonpipe.errors import InvalidRecord

SCHEMA = "carbonpipe.record/2"
#: The record schemas this version reads: /1 lacked the host facts of ``measurement``.
READABLE_SCHEMAS = ("carbonpipe.record/1", SCHEMA)
# "lost": the step's process died before it stopped (kill -9): see carbonpipe.lost_steps.
STATUSES = ("succeeded", "failed", "killed", "lost")
DETECTED_BY = ("metadata", "argument", "env", "default", "world")
METHODS = ("rapl", "cpu_load", "tdp", "nvml", "estimate", "kepler")
RECORDS_PREFIX = "records/v2"
#: Where versions before the ``pipeline_key`` folder wrote records: read too, until migrated.
LEGACY_RECORDS_PREFIX = "records/v1"
#: The name of the pipeline's partition folder in ``records/v2``.
PIPELINE_PARTITION = "pipeline_key"

# The record's shape (documented in carbonpipe/schemas/record.v2.json): what is always written.
#: Top-level figures, always floats.
FLOAT_FIELDS = ("duration_s", "pue", "intensity_g_per_kwh", "emissions_kg_co2e")
#: ``energy_kwh``'s and ``power_w``'s parts, always floats.
ENERGY_PARTS = ("cpu", "gpu", "ram", "remote", "total")
POWER_PARTS = ("cpu", "gpu", "ram")
#: ``location``'s fields, each always present (null where unknown).
LOCATION_FIELDS = ("provider", "region", "country_iso", "detected_by")
#: ``measurement``'s fields, each always present (null where unknown): how the energy was
#: measured, and the host it was measured on (``os`` to ``ram_total_size_gib``: new in /2).
MEASUREMENT_FIELDS = (
    "method",
    "tracking_mode",
    "share",
    "codecarbon_version",
    "cpu_model",
    "gpu_model",
    "os",
    "python_version",
    "cpu_count",
    "ram_total_size_gib",
)
HOST_FIELDS = ("os", "python_version", "cpu_count", "ram_total_size_gib")
_MEASUREMENT_FLOATS = ("ram_total_size_gib",)
#: The figures of a ``remote`` entry and of a regression alert, always floats.
_REMOTE_FLOATS = ("energy_kwh", "emissions_kg_co2e")
_ALERT_FLOATS = (
    "emissions_kg_co2e",
    "baseline_mean_kg_co2e",
    "baseline_std_kg_co2e",
    "factor",
    "threshold_kg_co2e",
    "increase_percent",
)

_KEY_SAFE = re.compile(r"[A-Za-z0-9._\-]+")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")
# Room for the sanitised text of an identity value (at most 200 characters) in one key part.
_KEY_PART_CHARS = 200


def make_record_id(project: str, pipeline: str, run_id: str, step: str, attempt: int) -> str:
    """Return the deterministic id of one attempt of one step of one run."""
    basis = "\x1f".join([project, pipeline, run_id, step, str(attempt)])
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def key_hash(value: str, chars: int = 8) -> str:
    """A short hex digest of ``value``'s true text, which keeps sanitised key parts apart."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:chars]


def partition_value(value: str) -> str:
    """Return ``value`` as a Hive partition folder name, one value to one name.

    A key-safe value (letters, digits, ``._-``) is its own name, so existing stores keep their
    keys; any other value is its sanitised form plus a short hash of its true text
    (``team/a`` -> ``team_a-<hash>``), so values that differ only in characters a key cannot
    hold do not share a folder. The record itself keeps the true value.
    """
    if _KEY_SAFE.fullmatch(value):
        return value
    return f"{_KEY_UNSAFE.sub('_', value)[:_KEY_PART_CHARS]}-{key_hash(value)}"


def partition_values(value: str) -> tuple[str, ...]:
    """The folder names records of ``value`` may be under: :func:`partition_value`'s, then the
    lossy one earlier versions wrote (``ranking v2`` -> ``ranking_v2``) if it differs.

    A reader that lists the second folder must keep only the records whose ``pipeline`` field
    is ``value``: other values may share that folder.
    """
    legacy = _KEY_UNSAFE.sub("_", value) or "_"
    current = partition_value(value)
    return (current,) if legacy == current else (current, legacy)


def utc_iso(ts: datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with a ``Z``."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """Parse the ISO-8601 timestamps records carry."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@dataclass(frozen=True)
class Record:
    """One step attempt: identity, timing, energy, emissions, location and provenance."""

    record_id: str
    project: str
    experiment: str
    pipeline: str
    run_id: str
    step: str
    team: str
    attempt: int
    started_at: str
    ended_at: str
    duration_s: float
    status: str
    energy_kwh: dict[str, float]
    power_w: dict[str, float]
    pue: float
    intensity_g_per_kwh: float
    emissions_kg_co2e: float
    location: dict[str, Any]
    intensity_source: dict[str, Any]
    measurement: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    # How its start was shifted to a cleaner grid (intensity.scheduling): null if it was not.
    scheduling: dict[str, Any] | None = None
    remote: list[dict[str, Any]] = field(default_factory=list)
    tracking_errors: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    # The step's units of work (SCI's R) and its SCI score: null where none were declared.
    functional_units: dict[str, Any] | None = None
    sci_g_per_unit: float | None = None
    # Where the PUE came from {kind, name, vintage}; the embodied share M of the hardware
    # (carbonpipe.hardware) and operational + embodied: null in records written before them.
    pue_source: dict[str, Any] | None = None
    embodied_kg_co2e: float | None = None
    embodied: dict[str, Any] | None = None
    total_kg_co2e: float | None = None
    # The step's energy over time (intensity.timed): {unit: "nWh", points: [[offset s, nWh]]}.
    energy_profile: dict[str, Any] | None = None
    schema: str = SCHEMA

    @property
    def date(self) -> str:
        """The UTC date partition of the record (from ``ended_at``)."""
        return self.ended_at[:10]

    @property
    def key(self) -> str:
        """The record's key in a store."""
        return record_key(self.date, self.pipeline, self.record_id)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as the JSON-ready mapping stored on disk.

        Typed as the schema says: every figure a float (an int given for one is converted),
        every field of ``location`` and ``measurement`` present (``None`` where not given).

        Raises:
            InvalidRecord: A figure is an int too large for a float; the field is named.
        """
        return typed(asdict(self))

    def to_json(self) -> bytes:
        """Serialise deterministically (sorted keys), so equal records are equal bytes.

        Raises:
            InvalidRecord: A figure is ``NaN`` or infinite (not JSON), or an int too large for
                a float; the field is named.
        """
        data = self.to_dict()
        try:
            text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except ValueError:
            raise _fail(_nonfinite_field(data) or "?", "must be a finite number") from None
        return text.encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        """Validate ``data`` (``carbonpipe.record/2`` or ``/1``) and build a record.

        A ``/1`` record is upgraded: its figures become floats, its missing fields ``None``,
        and its ``schema`` the current one.
        """
        validate(data)
        known = {f for f in cls.__dataclass_fields__}
        fields = typed({k: v for k, v in data.items() if k in known})
        fields["schema"] = SCHEMA
        return cls(**fields)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Record:
        """Parse and validate a stored record."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InvalidRecord(f"record is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidRecord("record must be a JSON object")
        return cls.from_dict(data)


def record_key(date: str, pipeline: str, record_id: str) -> str:
    """Return ``records/v2/date=<date>/pipeline_key=<partition value>/<record_id>.json``."""
    part = f"{PIPELINE_PARTITION}={partition_value(pipeline)}"
    return f"{RECORDS_PREFIX}/date={date}/{part}/{record_id}.json"


def legacy_record_key(date: str, pipeline: str, record_id: str) -> str:
    """Return where versions before ``records/v2`` put the record (``records/v1/.../pipeline=``)."""
    part = f"pipeline={partition_value(pipeline)}"
    return f"{LEGACY_RECORDS_PREFIX}/date={date}/{part}/{record_id}.json"


def record_day_prefixes(day: str, pipeline: str | None = None) -> list[str]:
    """The folders that may hold one day's records (of one ``pipeline``): ``records/v2``'s first,
    then ``records/v1``'s (with a pipeline, its folder and the lossy one of older versions, whose
    records a reader keeps only if their ``pipeline`` field matches)."""
    if pipeline is None:
        return [f"{RECORDS_PREFIX}/date={day}/", f"{LEGACY_RECORDS_PREFIX}/date={day}/"]
    return [f"{RECORDS_PREFIX}/date={day}/{PIPELINE_PARTITION}={partition_value(pipeline)}/"] + [
        f"{LEGACY_RECORDS_PREFIX}/date={day}/pipeline={p}/" for p in partition_values(pipeline)
    ]


def record_id_of_key(key: str) -> str:
    """The record id a record's key ends with (``.../<record_id>.json``)."""
    return key.rsplit("/", 1)[-1].removesuffix(".json")


def _as_float(value: Any, name: str) -> Any:
    """``value`` as a float if it is an int (not a bool), else unchanged."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _fail(name, "must be a finite number") from None
    return value


def _floats(data: Mapping[str, Any], names: tuple[str, ...], where: str) -> dict[str, Any]:
    out = dict(data)
    for name in names:
        if name in out:
            out[name] = _as_float(out[name], f"{where}.{name}")
    return out


def typed(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a record's mapping) in the schema's types: the figures floats, the fields of
    ``location`` and ``measurement`` all present (``None`` where missing). Nothing else changes.
    """
    out = dict(data)
    for name in FLOAT_FIELDS:
        if name in out:
            out[name] = _as_float(out[name], name)
    for name, parts in (("energy_kwh", ENERGY_PARTS), ("power_w", POWER_PARTS)):
        if isinstance(out.get(name), Mapping):
            out[name] = _floats(out[name], parts, name)
    for name, keys in (("location", LOCATION_FIELDS), ("measurement", MEASUREMENT_FIELDS)):
        if isinstance(out.get(name), Mapping):
            out[name] = {**dict.fromkeys(keys), **out[name]}
    if isinstance(out.get("measurement"), Mapping):
        out["measurement"] = _floats(out["measurement"], _MEASUREMENT_FLOATS, "measurement")
    if isinstance(out.get("scheduling"), Mapping):
        out["scheduling"] = _floats(out["scheduling"], SCHEDULING_FLOATS, "scheduling")
    if "sci_g_per_unit" in out:
        out["sci_g_per_unit"] = _as_float(out["sci_g_per_unit"], "sci_g_per_unit")
    for name in ("embodied_kg_co2e", "total_kg_co2e"):
        if name in out:
            out[name] = _as_float(out[name], name)
    if isinstance(out.get("embodied"), Mapping):
        out["embodied"] = _floats(
            {**dict.fromkeys(EMBODIED_FIELDS), **out["embodied"]}, _EMBODIED_FLOATS, "embodied"
        )
    if isinstance(out.get("functional_units"), Mapping):
        out["functional_units"] = _floats(out["functional_units"], ("count",), "functional_units")
    for name, floats in (("remote", _REMOTE_FLOATS), ("alerts", _ALERT_FLOATS)):
        if isinstance(out.get(name), list):
            out[name] = [
                _floats(e, floats, f"{name}[{i}]") if isinstance(e, Mapping) else e
                for i, e in enumerate(out[name])
            ]
    return out


#: The figures of ``scheduling``, always floats (or null).
SCHEDULING_FLOATS = (
    "waited_s",
    "expected_duration_s",
    "intensity_at_decision",
    "intensity_planned",
    "intensity_actual",
    "intensity_if_started_at_decision",
)


def _scheduling(data: Mapping[str, Any]) -> None:
    """``scheduling``: absent, null, or an object with its times and figures."""
    block = data.get("scheduling")
    if block is None:
        return
    if not isinstance(block, Mapping):
        raise _fail("scheduling", "must be null or an object {decided_at, planned_start, ...}")
    for name in ("decided_at", "planned_start"):
        if not isinstance(block.get(name), str):
            raise _fail(f"scheduling.{name}", "must be an ISO-8601 string")
    _number(block, "waited_s", where="scheduling")
    for name in SCHEDULING_FLOATS[1:]:
        if block.get(name) is not None:
            _number(block, name, where="scheduling")


def _energy_profile(data: Mapping[str, Any]) -> None:
    """``energy_profile``: absent, null or ``{unit: "nWh", points: [[offset s >= 0, nWh >= 0]]}``."""
    block = data.get("energy_profile")
    if block is None:
        return
    points = block.get("points") if isinstance(block, Mapping) else None
    if not isinstance(points, list) or block.get("unit") != "nWh":
        raise _fail("energy_profile", 'must be null or {"unit": "nWh", "points": [[s, nWh], ...]}')
    for i, point in enumerate(points):
        if not (
            isinstance(point, list)
            and len(point) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
            and isinstance(point[1], int)
            and math.isfinite(point[0])
            and point[0] >= 0
            and point[1] >= 0
        ):
            raise _fail(f"energy_profile.points[{i}]", "must be [offset s >= 0, integer nWh >= 0]")


_STR_FIELDS = ("record_id", "project", "pipeline", "run_id", "step", "started_at", "ended_at")


def _nonfinite_field(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinite float in a JSON-ready value, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    items: Any = ()
    if isinstance(value, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    for path, item in items:
        found = _nonfinite_field(item, path)
        if found is not None:
            return found
    return None


def _fail(field_name: str, problem: str) -> InvalidRecord:
    return InvalidRecord(f"record field {field_name!r} {problem}")


def _number(data: Mapping[str, Any], name: str, *, where: str = "") -> float:
    value = data.get(name)
    label = f"{where}.{name}" if where else name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(label, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise _fail(label, f"must be a finite number >= 0, got {value!r}")
    return float(value)


def validate(data: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidRecord` naming the first field that breaks the schema."""
    if data.get("schema") not in READABLE_SCHEMAS:
        raise _fail("schema", f"must be one of {READABLE_SCHEMAS}, got {data.get('schema')!r}")
    for name in _STR_FIELDS:
        if not isinstance(data.get(name), str) or not data.get(name):
            raise _fail(name, "must be a non-empty string")
    for name in ("experiment", "team"):
        if not isinstance(data.get(name, ""), str):
            raise _fail(name, "must be a string")
    attempt = data.get("attempt")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise _fail("attempt", f"must be an integer >= 1, got {attempt!r}")
    for name in ("started_at", "ended_at"):
        try:
            ts = datetime.fromisoformat(str(data[name]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise _fail(name, f"must be ISO-8601, got {data[name]!r}") from exc
        if ts.tzinfo is None:
            raise _fail(name, "must carry a UTC offset (e.g. 2026-11-24T10:00:00Z)")
    if data.get("status") not in STATUSES:
        raise _fail("status", f"must be one of {STATUSES}, got {data.get('status')!r}")
    for name in ("duration_s", "pue", "intensity_g_per_kwh", "emissions_kg_co2e"):
        _number(data, name)
    energy = data.get("energy_kwh")
    if not isinstance(energy, Mapping):
        raise _fail("energy_kwh", "must be an object {cpu, gpu, ram, remote, total}")
    for part in ("cpu", "gpu", "ram", "remote", "total"):
        _number(energy, part, where="energy_kwh")
    power = data.get("power_w")
    if not isinstance(power, Mapping):
        raise _fail("power_w", "must be an object {cpu, gpu, ram}")
    for part in ("cpu", "gpu", "ram"):
        _number(power, part, where="power_w")
    location = data.get("location")
    if not isinstance(location, Mapping):
        raise _fail("location", "must be an object {provider, region, country_iso, detected_by}")
    if location.get("detected_by") not in DETECTED_BY:
        raise _fail(
            "location.detected_by",
            f"must be one of {DETECTED_BY}, got {location.get('detected_by')!r}",
        )
    source = data.get("intensity_source")
    if not isinstance(source, Mapping) or not all(
        isinstance(source.get(k), str) for k in ("name", "vintage", "kind")
    ):
        raise _fail("intensity_source", "must be an object {name, vintage, kind} of strings")
    measurement = data.get("measurement")
    if not isinstance(measurement, Mapping) or measurement.get("method") not in METHODS:
        raise _fail("measurement.method", f"must be one of {METHODS}")
    _host_facts(measurement)
    _scheduling(data)
    _energy_profile(data)
    labels = data.get("labels", {})
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise _fail("labels", "must map strings to strings")
    for name in ("remote", "tracking_errors", "alerts"):
        if not isinstance(data.get(name, []), list):
            raise _fail(name, "must be a list")
    _functional_units(data)
    _embodied(data)


#: ``embodied``'s fields, each always present (null where unknown).
EMBODIED_FIELDS = (
    "method",
    "source",
    "vintage",
    "instance_type",
    "instance_type_by",
    "share",
    "lifetime_years",
    "host_kg_co2e",
    "note",
)
_EMBODIED_FLOATS = ("share", "lifetime_years", "host_kg_co2e")
#: How an embodied figure was found: a sourced table row, or the default model.
EMBODIED_METHODS = ("ccf", "estimated")


def _embodied(data: Mapping[str, Any]) -> None:
    """``pue_source``, ``embodied_kg_co2e``, ``embodied`` and ``total_kg_co2e``: each absent,
    null, or of its shape."""
    for name in ("embodied_kg_co2e", "total_kg_co2e"):
        if data.get(name) is not None:
            _number(data, name)
    pue = data.get("pue_source")
    if pue is not None and not (
        isinstance(pue, Mapping) and all(isinstance(pue.get(k), str) for k in ("kind", "name"))
    ):
        raise _fail("pue_source", "must be null or an object {kind, name, vintage}")
    block = data.get("embodied")
    if block is None:
        return
    if not isinstance(block, Mapping) or block.get("method") not in EMBODIED_METHODS:
        raise _fail("embodied.method", f"must be one of {EMBODIED_METHODS}")
    share = _number(block, "share", where="embodied")
    if share > 1.0:
        raise _fail("embodied.share", f"must be at most 1, got {share}")
    if _number(block, "lifetime_years", where="embodied") <= 0:
        raise _fail("embodied.lifetime_years", "must be > 0")


def _functional_units(data: Mapping[str, Any]) -> None:
    """``functional_units`` (absent, null or ``{name, count > 0}``) and ``sci_g_per_unit``."""
    units = data.get("functional_units")
    if units is not None:
        if not isinstance(units, Mapping) or not isinstance(units.get("name"), str):
            raise _fail("functional_units", "must be null or an object {name, count}")
        if not units["name"] or len(units["name"]) > 64:
            raise _fail("functional_units.name", "must be 1 to 64 characters")
        if _number(units, "count", where="functional_units") <= 0:
            raise _fail("functional_units.count", "must be > 0")
    if data.get("sci_g_per_unit") is not None:
        _number(data, "sci_g_per_unit")


def _host_facts(measurement: Mapping[str, Any]) -> None:
    """The host facts of ``measurement``: each absent, ``None`` or of its type."""
    for name in ("os", "python_version", "codecarbon_version", "cpu_model", "gpu_model"):
        if measurement.get(name) is not None and not isinstance(measurement[name], str):
            raise _fail(f"measurement.{name}", "must be a string or null")
    count = measurement.get("cpu_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise _fail("measurement.cpu_count", f"must be an integer >= 1 or null, got {count!r}")
    if measurement.get("ram_total_size_gib") is not None:
        _number(measurement, "ram_total_size_gib", where="measurement")
