"""A stopped step's record: priced, checked against its baseline, exported, written, charged.

The second half of :class:`carbonpipe.tracker.CarbonTracker`'s stop path, kept apart so the
tracker stays readable: everything here runs after the step itself has finished, and nothing
here may fail it (every error ends in the record's ``tracking_errors`` or the log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from carbonpipe.record import Record
from carbonpipe.step import CarbonMetrics

if TYPE_CHECKING:
    from carbonpipe.budgets.status import BudgetStatus
    from carbonpipe.measure.base import Measurement
    from carbonpipe.step import _Step
    from carbonpipe.tracker import CarbonTracker

log = logging.getLogger("carbonpipe")

__all__ = ["record_step"]


def record_step(
    tracker: CarbonTracker, handle: _Step, status: str, m: Measurement
) -> CarbonMetrics:
    """Price the stopped step, write its one record (spooled if need be) and charge it."""
    errors = list(handle.errors) + list(m.errors)
    provider = region = country = None
    detected_by = "world"
    try:
        loc = tracker.location
        intensity = tracker.intensity
        provider, region, country = loc.provider, loc.region, loc.country_iso
        detected_by = loc.detected_by
        errors.extend(f"location: {n}" for n in loc.notes)
    except Exception as exc:  # never let detection break the step: world average
        from carbonpipe.intensity.table import lookup_intensity

        errors.append(f"location detection failed: {exc!r}")
        intensity = lookup_intensity(None, None, None)
    location: dict[str, Any] = {
        "provider": provider,
        "region": region,
        "country_iso": country,
        "detected_by": detected_by,
    }
    from carbonpipe.measure.host import host_facts
    from carbonpipe.pricing import build_record

    # A time-series source (CARBONPIPE_INTENSITY_SOURCE): the grid over the step's window.
    # The table (the default) needs none of that machinery, so it is not even imported.
    series = None
    spec = tracker.settings.timeseries_source
    if spec is not None:
        from carbonpipe.intensity.timed import step_series

        series, why = step_series(
            location,
            m.started_at,
            m.ended_at,
            spec=spec,
            options=tracker.settings.intensity,
            timeout_s=float(tracker.settings.intensity.get("timeout_s") or 5.0),
        )
        if why:
            errors.append(why)
    from carbonpipe.measure.resources import hardware_facts

    s = tracker.settings
    pue, pue_source = s.pue_for(provider, region)
    record = build_record(
        tracker._identity(handle),
        status,
        m,
        location=location,
        intensity=intensity,
        pue=pue,
        pue_source=pue_source,
        hardware=hardware_facts(
            tracker._location, provider, s.meter_mode, s.embodied_lifetime_years, m.resources
        ),
        tracking_mode=s.tracking_mode,
        remote=list(handle.remote.values()),
        errors=errors,
        host=m.host or host_facts(),
        functional_units=handle.units or _one_unit(tracker),
        series=series,
    )
    if handle.scope is not None:  # the work ran elsewhere: say what the meter measured
        record = replace(record, measurement={**record.measurement, "scope": handle.scope})
    if handle.scheduling is not None:  # a shifted start: its plan, and the run's intensity
        record = handle.scheduling.apply(record)
    alerts = _alerts(tracker, handle, record.emissions_kg_co2e)
    if alerts:
        record = replace(record, alerts=alerts)
    # Metrics sinks (OpenTelemetry, a Pushgateway): nothing is loaded unless one may be set
    # up; before the record is written, so a failed export is in its tracking_errors.
    if "opentelemetry.metrics" in sys.modules or os.environ.get("CARBONPIPE_PUSHGATEWAY_URL"):
        from carbonpipe.exporters.registry import export_record

        record = export_record(record)
    if handle.open_step is not None:  # the final record takes the open entry's place
        with contextlib.suppress(Exception):
            handle.open_step.finishing(tracker.store, record.key, record.to_json())
    budget_status = _deliver(tracker, record)
    for e in record.tracking_errors:
        log.warning("carbonpipe: %s", e)
    metrics = CarbonMetrics.from_record(record, m, budget_status)
    if log.isEnabledFor(logging.INFO):  # the comparisons load the factors file: only if shown
        log.info("%s", metrics.summary_line())
    return metrics


def _one_unit(tracker: CarbonTracker) -> dict[str, Any] | None:
    """One of the tracker's ``functional_unit``: a step's R unless it declared its own."""
    return {"name": tracker.functional_unit, "count": 1.0} if tracker.functional_unit else None


def _alerts(tracker: CarbonTracker, handle: _Step, emissions_kg: float) -> list[dict[str, Any]]:
    """Compare the step with its baseline, if one is stored; never fails the step."""
    try:
        from carbonpipe import baseline
    except ImportError:
        return []
    try:
        alert = baseline.check_regression(
            tracker.store,
            tracker.settings.pipeline,
            handle.name,
            emissions_kg,
            factor=tracker.settings.regression_factor,
            action=tracker.settings.regression,
        )
    except Exception as exc:
        handle.errors.append(f"baseline check failed: {exc!r}")
        return []
    return [alert] if alert else []


def _deliver(tracker: CarbonTracker, record: Record) -> BudgetStatus | None:
    """Write the record (spooling if the store is down), charge it, close the open entry."""
    from carbonpipe.delivery import deliver_record
    from carbonpipe.stores.open_steps import settle

    per_run = tracker.budget is not None and tracker.budget.scope.startswith("run:")
    books = {
        b.scope
        for b in (tracker.budget, *tracker.settings.budgets)
        if getattr(b, "basis", "") == "total"
    }
    try:
        done = deliver_record(tracker.store, record, run_scope=per_run, total_scopes=books)
    except Exception as exc:
        log.error(
            "carbonpipe: record %s could not be written or spooled: %s", record.record_id, exc
        )
        return None
    if done.delivery.spooled:
        log.warning(
            "carbonpipe: store %s unavailable, record %s spooled for replay: %s",
            tracker.store.uri,
            record.record_id,
            done.delivery.error,
        )
    if done.charge_error is not None:
        return None  # logged; the open entry stays, so a sweep charges the record later
    try:
        settle(record.record_id)  # record and charges are safe: the open entry goes
        if tracker.budget is not None:
            from carbonpipe.budgets.ledger import BudgetLedger

            return BudgetLedger(tracker.store).status(tracker.budget.on_book())
    except Exception as exc:
        log.warning("carbonpipe: budget status after %s unavailable: %s", record.record_id, exc)
    return None
