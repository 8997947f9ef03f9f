"""Client side: read an ``x_carbon_trace`` from a response, a dict or JSON text, in kWh and kg.

A missing trace gives ``None``; a malformed one raises :class:`InvalidCarbonTrace` naming the
field, or with ``strict=False`` gives a result flagged ``partial`` with its ``problems``.

What a server sends is untrusted: JSON text is parsed under caps (:mod:`carbonpipe._safejson`:
a header of at most 64 KiB, a body of at most 32 MiB, nesting at most 32 deep, integers of at
most 30 digits, no ``NaN``/``Infinity``), every figure must be finite, >= 0 and at most
:data:`MAX_FIGURE` in its unit, and a partial result carries at most :data:`MAX_PROBLEMS`
problems, each quoting at most 80 characters of the bad value. Nothing but
:class:`InvalidCarbonTrace` (or a ``partial`` result) comes out of a hostile trace.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from carbonpipe import _safejson
from carbonpipe._safejson import short_repr, short_text
from carbonpipe.errors import InvalidCarbonTrace

log = logging.getLogger("carbonpipe.trace")

TRACE_KEY = "x_carbon_trace"
TRACE_HEADER = "x-carbon-trace"

_KWH_TO_J = 3.6e6

# Caps on what a server may send and what its trace may add to a step's record.
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
# The largest figure a trace may report, after conversion (kWh, kg CO2e, W, s): far above any
# real request, low enough that no sum of such figures overflows a float.
MAX_FIGURE = 1e15
MAX_PROBLEMS = 10
# A step's record takes at most this many notes about traces (each at most 2,000 characters).
MAX_STEP_NOTES = 20
_NOTE_CHARS = 2000

# -- client: reading a trace ------------------------------------------------------------------

_ENERGY_UNITS = {"wh": 1e-3, "kwh": 1.0, "j": 1 / _KWH_TO_J}
_MASS_UNITS = {
    "g_co2": 1e-3,
    "g_co2e": 1e-3,
    "g_co2eq": 1e-3,
    "kg_co2": 1.0,
    "kg_co2e": 1.0,
    "kg_co2eq": 1.0,
}
_POWER_UNITS = {"watts": 1.0, "w": 1.0, "kw": 1e3}
_TIME_UNITS = {"seconds": 1.0, "s": 1.0, "ms": 1e-3}
# (key prefix, CodeCarbonMetrics field, units): a key "<prefix><unit>" with an unknown unit is
# an error, so a server reporting "energy_consumed_mwh" is refused, not silently misread.
_FAMILIES: tuple[tuple[str, str, Mapping[str, float]], ...] = (
    ("energy_consumed_", "energy_kwh", _ENERGY_UNITS),
    ("cpu_energy_", "cpu_energy_kwh", _ENERGY_UNITS),
    ("gpu_energy_", "gpu_energy_kwh", _ENERGY_UNITS),
    ("ram_energy_", "ram_energy_kwh", _ENERGY_UNITS),
    ("emissions_", "gwp_kgco2eq", _MASS_UNITS),
    ("cpu_power_", "cpu_power_watts", _POWER_UNITS),
    ("gpu_power_", "gpu_power_watts", _POWER_UNITS),
    ("ram_power_", "ram_power_watts", _POWER_UNITS),
    ("duration_", "duration_s", _TIME_UNITS),
)
# Keys that share a family's prefix but are other quantities (CodeCarbon's emissions rate).
_NOT_FAMILY = ("emissions_rate",)
_FLAGS = ("measured", "tracking_active")


@dataclass(frozen=True)
class CodeCarbonMetrics:
    """What a model server reported for one request, normalised to kWh, kg CO2e, W and s.

    ``None`` means the server did not report that figure (or, in a ``partial`` result, that it
    was malformed). ``energy_kwh`` is always a number: given, else the sum of the per-device
    figures, else 0 (with a problem recorded unless ``tracking_active`` is false).
    """

    energy_kwh: float
    gwp_kgco2eq: float | None = None
    cpu_energy_kwh: float | None = None
    gpu_energy_kwh: float | None = None
    ram_energy_kwh: float | None = None
    cpu_power_watts: float | None = None
    gpu_power_watts: float | None = None
    ram_power_watts: float | None = None
    duration_s: float | None = None
    measured: bool = True
    tracking_active: bool = True
    server: str | None = None
    partial: bool = False
    problems: tuple[str, ...] = ()
    tracking_method: str = "codecarbon"

    @property
    def emissions_kg_co2e(self) -> float | None:
        """Alias of ``gwp_kgco2eq`` with the unit name carbonpipe's records use."""
        return self.gwp_kgco2eq

    @classmethod
    def from_response(cls, obj: object, *, strict: bool = True) -> CodeCarbonMetrics | None:
        """Read the trace of a response, dict or JSON text; see :func:`extract_carbon_metrics`."""
        return _extract(obj, strict=strict, read_body=True)

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready values."""
        return {
            "energy_kwh": self.energy_kwh,
            "gwp_kgco2eq": self.gwp_kgco2eq,
            "cpu_energy_kwh": self.cpu_energy_kwh,
            "gpu_energy_kwh": self.gpu_energy_kwh,
            "ram_energy_kwh": self.ram_energy_kwh,
            "cpu_power_watts": self.cpu_power_watts,
            "gpu_power_watts": self.gpu_power_watts,
            "ram_power_watts": self.ram_power_watts,
            "duration_s": self.duration_s,
            "measured": self.measured,
            "tracking_active": self.tracking_active,
            "server": self.server,
            "partial": self.partial,
            "problems": list(self.problems),
            "tracking_method": self.tracking_method,
        }


def extract_carbon_metrics(
    obj: object,
    *,
    strict: bool = True,
    attribute: bool = False,
    server: str | None = None,
) -> CodeCarbonMetrics | None:
    """Read the ``x_carbon_trace`` of a response and, optionally, charge it to the running step.

    Args:
        obj: An ``httpx.Response`` or ``requests.Response`` (its JSON body's ``x_carbon_trace``,
            else its ``X-Carbon-Trace`` header), a dict holding ``x_carbon_trace``, JSON text or
            bytes of such a dict, or a :class:`CodeCarbonMetrics` (returned as is).
        strict: Raise :class:`InvalidCarbonTrace` on a malformed trace; with ``False``, return a
            result flagged ``partial`` whose ``problems`` name the bad fields.
        attribute: Also charge the trace to the running tracked step, as :func:`attribute` does.
        server: The server's name for the step's ``remote`` list; default the response's URL.

    Returns:
        The metrics, or ``None`` when there is no trace (or no JSON, with ``strict=False``).

    Raises:
        InvalidCarbonTrace: The trace (or JSON text) is malformed and ``strict`` is true.
        TypeError: ``obj`` is none of the accepted kinds.
    """
    if attribute:
        return _attribute(obj, server=server, strict=strict, read_body=True)
    metrics = _extract(obj, strict=strict, read_body=True)
    if metrics is not None and server is not None:
        metrics = replace(metrics, server=server)
    return metrics


def _extract(obj: object, *, strict: bool, read_body: bool) -> CodeCarbonMetrics | None:
    if isinstance(obj, CodeCarbonMetrics):
        return obj
    if isinstance(obj, Mapping):
        return _from_body(obj, strict=strict, server=None)
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            body = _safejson.loads(obj, max_bytes=MAX_BODY_BYTES)
        except ValueError as exc:
            if strict:
                raise InvalidCarbonTrace(f"response body is not JSON: {exc}") from None
            return None
        return _from_body(body, strict=strict, server=None)
    if hasattr(obj, "headers") and callable(getattr(obj, "json", None)):
        return _from_response(obj, strict=strict, read_body=read_body)
    raise TypeError(
        "expected an httpx or requests response, a dict, JSON text or CodeCarbonMetrics, "
        f"got {type(obj).__name__}"
    )


def _from_body(body: object, *, strict: bool, server: str | None) -> CodeCarbonMetrics | None:
    if not isinstance(body, Mapping):
        return None
    trace = body.get(TRACE_KEY)
    if trace is None:
        return None
    return _parse_trace(trace, strict=strict, server=server, where=TRACE_KEY)


def _from_response(resp: Any, *, strict: bool, read_body: bool) -> CodeCarbonMetrics | None:
    server = _server_of(resp)
    headers = resp.headers
    if read_body and _is_json(headers.get("content-type")):
        try:
            body = resp.json()
        except Exception:  # not read (streamed) or not JSON: the header may still carry a trace
            body = None
        found = _from_body(body, strict=strict, server=server)
        if found is not None:
            return found
    header = headers.get(TRACE_HEADER)
    if not header:
        return None
    where = "X-Carbon-Trace header"
    try:
        if not isinstance(header, (str, bytes, bytearray)):
            raise ValueError(f"a {type(header).__name__}, not text")
        trace = _safejson.loads(header, max_bytes=MAX_HEADER_BYTES)
    except ValueError as exc:
        if strict:
            raise InvalidCarbonTrace(f"{where}: not JSON ({exc})") from None
        return _unreadable(server, f"{where}: not JSON ({exc})")
    return _parse_trace(trace, strict=strict, server=server, where=where)


def _parse_trace(
    trace: object, *, strict: bool, server: str | None, where: str
) -> CodeCarbonMetrics:
    """Validate and normalise one trace object; every problem names its field."""
    problems: list[str] = []

    def bad(message: str) -> None:
        message = short_text(message, 300)
        if strict:
            raise InvalidCarbonTrace(message)
        if len(problems) < MAX_PROBLEMS:
            problems.append(message)
        elif len(problems) == MAX_PROBLEMS:
            problems.append("further problems left out")

    if not isinstance(trace, Mapping):
        message = f"{where}: must be a JSON object, got {type(trace).__name__}"
        bad(message)
        return _unreadable(server, message)
    values: dict[str, float | None] = {}
    seen: dict[str, tuple[str, float]] = {}
    for key, raw in trace.items():
        if not isinstance(key, str):
            continue
        family = _family_of(key)
        if family is None:
            continue
        prefix, target, units = family
        unit = key[len(prefix) :]
        if unit not in units:
            bad(
                f"{where}.{short_text(key, 60)}: unknown unit {short_repr(unit, 40)}; "
                f"expected {prefix}{{{', '.join(units)}}}"
            )
            continue
        number = _check_number(f"{where}.{key}", raw, bad)
        if number is None:
            continue
        value = number * units[unit]
        if value > MAX_FIGURE:
            bad(
                f"{where}.{key}: {short_repr(raw, 40)} is more than any request reports "
                f"(at most {MAX_FIGURE:g} kWh, kg CO2e, W or s)"
            )
            continue
        if target in seen:
            other_key, other = seen[target]
            if not math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-15):
                bad(f"{where}.{key}: disagrees with {other_key} (the same figure in another unit)")
                values[target] = None
            continue
        seen[target] = (key, value)
        values[target] = value
    flags: dict[str, bool] = {}
    for name in _FLAGS:
        raw = trace.get(name)
        if raw is None:
            flags[name] = True
        elif isinstance(raw, bool):
            flags[name] = raw
        else:
            bad(f"{where}.{name}: must be true or false, got {type(raw).__name__}")
            flags[name] = False
    energy = values.get("energy_kwh")
    if energy is None:
        parts = [values.get(f"{p}_energy_kwh") for p in ("cpu", "gpu", "ram")]
        known = [p for p in parts if p is not None]
        if known:
            energy = sum(known)
            if not math.isfinite(energy):  # cannot happen under MAX_FIGURE; kept as the rule
                bad(f"{where}: the per-device energy figures sum to {energy!r}")
                energy = 0.0
        else:
            energy = 0.0
            if flags["tracking_active"] and "energy_kwh" not in values:
                bad(f"{where}: no energy figure (energy_consumed_wh or energy_consumed_kwh)")
    return CodeCarbonMetrics(
        energy_kwh=energy,
        gwp_kgco2eq=values.get("gwp_kgco2eq"),
        cpu_energy_kwh=values.get("cpu_energy_kwh"),
        gpu_energy_kwh=values.get("gpu_energy_kwh"),
        ram_energy_kwh=values.get("ram_energy_kwh"),
        cpu_power_watts=values.get("cpu_power_watts"),
        gpu_power_watts=values.get("gpu_power_watts"),
        ram_power_watts=values.get("ram_power_watts"),
        duration_s=values.get("duration_s"),
        measured=flags["measured"],
        tracking_active=flags["tracking_active"],
        server=server,
        partial=bool(problems),
        problems=tuple(problems),
    )


def _family_of(key: str) -> tuple[str, str, Mapping[str, float]] | None:
    if key.startswith(_NOT_FAMILY):
        return None
    for family in _FAMILIES:
        if key.startswith(family[0]):
            return family
    return None


def _check_number(field: str, raw: object, bad: Callable[[str], None]) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        bad(f"{field}: must be a number, got {type(raw).__name__} {short_repr(raw, 60)}")
        return None
    try:
        value = float(raw)
    except OverflowError:  # an integer too large for a float
        value = math.inf
    if not math.isfinite(value):
        bad(f"{field}: must be finite, got {short_repr(raw, 40)}")
        return None
    if value < 0:
        bad(f"{field}: must be >= 0, got {short_repr(raw, 40)}")
        return None
    return value


def _unreadable(server: str | None, problem: str) -> CodeCarbonMetrics:
    return CodeCarbonMetrics(
        energy_kwh=0.0,
        measured=False,
        tracking_active=False,
        server=server,
        partial=True,
        problems=(problem,),
    )


def _is_json(content_type: object) -> bool:
    if not isinstance(content_type, str):
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _server_of(resp: Any) -> str | None:
    """Return ``scheme://host:port`` of a response's URL, when it has one."""
    try:
        url = resp.url
    except Exception:  # an httpx.Response built without a request has no URL
        return None
    if url is None:
        return None
    try:
        parts = urlsplit(str(url))
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")


_ATTRIBUTED = "_carbonpipe_attributed_trace"


# -- client: attribution ----------------------------------------------------------------------


def attribute(
    response_or_metrics: object, server: str | None = None, *, strict: bool = True
) -> CodeCarbonMetrics | None:
    """Charge a model server's reported energy and emissions to the running tracked step.

    Adds to the step's record ``energy_kwh.remote`` and its ``remote`` list (per server: count,
    kWh, kg CO2e) through :meth:`current_step().add_remote <carbonpipe.tracker._Step.add_remote>`,
    so the step's emissions and budget include what its calls cost. A response object is
    charged at most once (hooks and explicit calls can meet); a trace without emissions is
    priced at the world-average grid intensity, and a ``partial`` trace charges what was
    readable; both are noted in the record's ``tracking_errors``. Outside a tracked step
    nothing is charged.

    Args:
        response_or_metrics: Anything :func:`extract_carbon_metrics` reads.
        server: The server's name; default the response's ``scheme://host:port``, else
            ``"unknown"``.
        strict: As for :func:`extract_carbon_metrics`.

    Returns:
        The metrics read (charged or not), or ``None`` when there was no trace.
    """
    return _attribute(response_or_metrics, server=server, strict=strict, read_body=True)


def _attribute(
    obj: object, *, server: str | None, strict: bool, read_body: bool
) -> CodeCarbonMetrics | None:
    from carbonpipe.step import current_step

    charged = getattr(obj, _ATTRIBUTED, None)
    if isinstance(charged, CodeCarbonMetrics):
        return charged
    metrics = _extract(obj, strict=strict, read_body=read_body)
    if metrics is None:
        return None
    if server is not None:
        metrics = replace(metrics, server=server)
    step = current_step()
    if step is None:
        log.debug("carbonpipe: x_carbon_trace read outside a tracked step; not charged")
        return metrics
    name = metrics.server or "unknown"
    emissions = metrics.gwp_kgco2eq
    if emissions is None:
        from carbonpipe.intensity.table import lookup_intensity

        world = lookup_intensity(None, None, None).intensity_g_per_kwh
        emissions = metrics.energy_kwh * world / 1000.0
        _note(
            step.errors,
            f"x_carbon_trace from {name} had no emissions; priced at the world average "
            f"({world:g} g/kWh)",
        )
    if metrics.partial:
        _note(
            step.errors,
            f"x_carbon_trace from {name} was malformed, charged what was readable: "
            + "; ".join(metrics.problems),
        )
    energy, emissions = _bounded(metrics.energy_kwh), _bounded(emissions)
    step.add_remote(name, energy_kwh=energy, emissions_kg_co2e=emissions)
    # Dicts, text and frozen metrics cannot be marked: only response objects are charged once.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(obj, _ATTRIBUTED, metrics)
    return metrics


def _note(errors: list[str], text: str) -> None:
    """Add a note on a trace to a step's errors: at most MAX_STEP_NOTES of them, each short."""
    prefix = "x_carbon_trace"
    count = sum(1 for e in errors if e.startswith(prefix))
    if count < MAX_STEP_NOTES:
        errors.append(short_text(text, _NOTE_CHARS))
    elif count == MAX_STEP_NOTES:
        errors.append(f"{prefix}: further notes on traces left out")


def _bounded(figure: float) -> float:
    """A trace's figure as charged: finite and within [0, MAX_FIGURE] whatever it was given as."""
    if not math.isfinite(figure) or figure < 0:
        return 0.0 if math.isnan(figure) or figure < 0 else MAX_FIGURE
    return min(figure, MAX_FIGURE)
