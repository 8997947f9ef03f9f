"""Which metrics sinks are active, and running them on a finished step's record.

Cheap by design, since the tracker asks at every step's end: only ``os`` and ``sys`` are
imported here. OpenTelemetry is active only when the process has imported it already *and* set
a real ``MeterProvider`` (not the API's default proxy or no-op one); the Pushgateway only when
``CARBONPIPE_PUSHGATEWAY_URL`` is set. Neither configured: nothing is imported, nothing runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from carbonpipe.exporters.base import Exporter
    from carbonpipe.record import Record

PUSHGATEWAY_ENV = "CARBONPIPE_PUSHGATEWAY_URL"
DEADLINE_ENV = "CARBONPIPE_EXPORT_DEADLINE_S"
DEFAULT_DEADLINE_S = 2.0
_DEFAULT_PROVIDERS = frozenset({"NoOpMeterProvider", "_ProxyMeterProvider", "ProxyMeterProvider"})


def otel_provider() -> object | None:
    """The process's configured OpenTelemetry ``MeterProvider``, or ``None`` (never imports it)."""
    metrics = sys.modules.get("opentelemetry.metrics")
    if metrics is None:
        return None
    try:
        provider = metrics.get_meter_provider()
    except Exception:
        return None
    return None if type(provider).__name__ in _DEFAULT_PROVIDERS else provider


def any_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether any sink would run (for callers that skip work when none would)."""
    return bool(environ.get(PUSHGATEWAY_ENV, "").strip()) or otel_provider() is not None


def active_exporters(environ: Mapping[str, str] = os.environ) -> list[Exporter]:
    """The sinks configured for this process, in a fixed order (OpenTelemetry, Pushgateway)."""
    found: list[Exporter] = []
    provider = otel_provider()
    if provider is not None:
        from carbonpipe.exporters.otel import OtelExporter

        found.append(OtelExporter(provider))
    url = environ.get(PUSHGATEWAY_ENV, "").strip()
    if url:
        from carbonpipe.exporters.prometheus import PushgatewayExporter

        found.append(PushgatewayExporter(url))
    return found


def deadline_s(environ: Mapping[str, str] = os.environ) -> float:
    """Each sink's time limit: ``CARBONPIPE_EXPORT_DEADLINE_S``, 2 s by default."""
    try:
        value = float(environ.get(DEADLINE_ENV, "") or DEFAULT_DEADLINE_S)
    except ValueError:
        return DEFAULT_DEADLINE_S
    return value if 0 < value < float("inf") else DEFAULT_DEADLINE_S


def export_record(record: Record, *, environ: Mapping[str, str] = os.environ) -> Record:
    """Send ``record`` to every active sink; return it with their failures in ``tracking_errors``.

    Never raises: a sink that fails or passes its deadline is one ``tracking_errors`` entry (the
    tracker logs it); the step goes on.
    """
    if not any_configured(environ):
        return record
    errors: list[str] = []
    try:
        sinks = active_exporters(environ)
    except Exception as exc:  # a missing extra, a broken install: the step goes on
        sinks = []
        errors.append(f"metrics export unavailable: {exc}")
    limit = deadline_s(environ)
    for sink in sinks:
        try:
            error = sink.export(record, timeout_s=limit)
        except Exception as exc:
            error = f"{sink.name} export failed: {exc!r}"
        if error:
            errors.append(error)
    if not errors:  # the tracker logs every tracking error of the record it delivers
        return record
    return dataclasses.replace(record, tracking_errors=[*record.tracking_errors, *errors])
