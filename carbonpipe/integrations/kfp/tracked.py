"""The body of a ``@carbon_component``: gate, measure and record the user's function, and publish
its figures to the step's ``Output[Metrics]``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.errors import BudgetExceeded

if TYPE_CHECKING:
    from carbonpipe.step import CarbonMetrics
    from carbonpipe.tracker import CarbonTracker
from carbonpipe.integrations.kfp.context import (
    _MAX_ATTEMPTS,
    ATTEMPT_ENV,
    LOOP_WITHOUT_ITEM,
    KfpContext,
    MetricsArtifact,
    RecordArtifact,
    StepSkipped,
    publish_metrics,
    publish_record,
)

log = logging.getLogger("carbonpipe")


# ---------------------------------------------------------------------------------------------
# Metrics


def step_metrics(metrics: CarbonMetrics) -> dict[str, float]:
    """The figures a tracked step shows in the KFP UI (numbers only, as KFP's Metrics wants)."""
    out = {
        "energy_kwh": metrics.energy_consumed_kwh,
        "cpu_energy_kwh": metrics.cpu_energy_kwh,
        "gpu_energy_kwh": metrics.gpu_energy_kwh,
        "ram_energy_kwh": metrics.ram_energy_kwh,
        "emissions_g_co2e": metrics.emissions_g_co2e,
        "emissions_kg_co2e": metrics.emissions_kg_co2e,
        "intensity_g_per_kwh": metrics.carbon_intensity_g_per_kwh,
        "duration_s": metrics.duration_s,
        "tracking_errors": float(len(metrics.tracking_errors)),
    }
    if metrics.budget_percent is not None:
        out["budget_percent"] = metrics.budget_percent
    if metrics.sci_g_per_unit is not None:
        out["sci_g_per_unit"] = metrics.sci_g_per_unit
    if metrics.embodied_kg_co2e is not None and metrics.total_kg_co2e is not None:
        out["embodied_g_co2e"] = metrics.embodied_kg_co2e * 1000.0
        out["total_g_co2e"] = metrics.total_kg_co2e * 1000.0
    return out


# ---------------------------------------------------------------------------------------------
# Tracked steps


def make_tracker(config: Mapping[str, Any], identity: KfpContext) -> CarbonTracker:
    """Build the step's tracker: decoration-time settings, then the run's identity, then env."""
    from carbonpipe.budgets.budget import Budget
    from carbonpipe.tracker import CarbonTracker

    budget = config.get("budget")
    return CarbonTracker(
        project_name=config.get("project"),
        experiment_name=config.get("experiment"),
        # The pipeline's store parameter is the most specific: it names where this run records.
        output_dir=identity.store or config.get("store"),
        cloud_provider=config.get("cloud_provider"),
        cloud_region=config.get("cloud_region"),
        country_iso_code=config.get("country_iso_code"),
        tracking_mode=config.get("tracking_mode"),
        pipeline=config.get("pipeline") or identity.pipeline,
        team=config.get("team"),
        run_id=identity.run_id,
        budget=Budget(**budget) if budget else None,
        functional_unit=config.get("functional_unit"),
    )


# A loop item longer than this names the iteration by its task uuid instead.
_ITEM_MAX_CHARS = 64


def _render(value: Any) -> str:
    """A loop item's value as text; ``TypeError`` for what is not JSON (an artifact)."""
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def loop_item(kwargs: Mapping[str, Any], loop: str | None) -> str | None:
    """The ``dsl.ParallelFor`` item this execution got, as text: the value of the one input the
    loop feeds, or ``name=value`` pairs for several; ``None`` outside a loop or when unknown."""
    if not loop or loop == LOOP_WITHOUT_ITEM:
        return None
    names = [n for n in loop.split(",") if n]
    if not names or any(n not in kwargs for n in names):
        return None
    try:
        if len(names) == 1:
            return _render(kwargs[names[0]])
        return ",".join(f"{n}={_render(kwargs[n])}" for n in names)
    except (TypeError, ValueError):  # an artifact, or NaN: the task uuid names the iteration
        return None


def execution_step_name(base: str, ctx: KfpContext, kwargs: Mapping[str, Any]) -> str:
    """The step name of this execution: ``base`` outside a loop; in a ``dsl.ParallelFor``,
    ``base[<item>]`` (``base[<task uuid>]`` when the item is unknown, long or not printable),
    so every iteration is its own step and its retries are its attempts."""
    if not ctx.loop:
        return base
    item = loop_item(kwargs, ctx.loop)
    if item is not None and 0 < len(item) <= _ITEM_MAX_CHARS and item.isprintable():
        return f"{base}[{item}]"
    return f"{base}[{ctx.task_id}]" if ctx.task_id else base


def resolve_attempt(tracker: CarbonTracker, step: str) -> int | None:
    """Return the attempt number of ``step`` in this run: ``CARBONPIPE_ATTEMPT``, else one more
    than the attempts already recorded today or yesterday (KFP retries reuse run and task).

    ``None`` (the tracker's default, 1) when the run id was not given or the store cannot say.
    """
    env = os.environ.get(ATTEMPT_ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"{ATTEMPT_ENV} must be an integer >= 1, got {env!r}") from None
        if value < 1:
            raise ValueError(f"{ATTEMPT_ENV} must be an integer >= 1, got {env!r}")
        return value
    if not tracker.settings.run_id:
        return None
    from carbonpipe.record import make_record_id, record_day_prefixes

    s = tracker.settings
    today = datetime.now(timezone.utc).date()
    try:
        seen: set[str] = set()
        for day in (today - timedelta(days=1), today):
            for prefix in record_day_prefixes(day.isoformat(), s.pipeline):  # v1's folders too
                seen.update(
                    k.rsplit("/", 1)[-1].removesuffix(".json") for k in tracker.store.list(prefix)
                )
    except Exception as exc:  # the store is down: the record will be spooled as attempt 1
        log.debug("carbonpipe: cannot list earlier attempts of %s: %s", step, exc)
        return None
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        if make_record_id(s.project, s.pipeline, tracker.run_id, step, attempt) not in seen:
            return attempt
    return _MAX_ATTEMPTS + 1


def run_tracked_step(
    func: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    config: Mapping[str, Any],
    metrics: MetricsArtifact | None = None,
    identity: Mapping[str, object] | None = None,
    record: RecordArtifact | None = None,
) -> Any:
    """Run ``func(**kwargs)`` as one tracked step and return its result.

    The budget (if any) gates the step before it starts; ``BudgetExceeded`` propagates when its
    ``on_exceed`` is ``fail``. With ``skip`` the function is not called and ``None`` returned
    (a component that declares a return value cannot be skipped: :class:`StepSkipped`). The
    step's figures go to ``metrics`` and its record to the store and, as a copy KFP keeps in the
    pipeline root when the pod and its spool are gone, to ``record``; a tracking failure never
    changes the function's result or exception.
    """
    from carbonpipe._optional import one_line_when_missing

    one_line_when_missing()  # a missing extra ends the task with one line, not a traceback
    from carbonpipe.step_identity import step_identity

    ctx = KfpContext.from_inputs(identity)
    base = config.get("step") or ctx.task or config.get("function") or func.__name__
    step = execution_step_name(base, ctx, kwargs)
    tracker = make_tracker(config, ctx)
    item = loop_item(kwargs, ctx.loop)
    who = step_identity(
        orchestrator="kfp",
        pipeline=tracker.settings.pipeline,
        run_id=tracker.run_id,
        task=step,
        attempt=resolve_attempt(tracker, step) or 1,
        native={**ctx.native(), "loop_item": None if item is None else item[:200]},
        labels=config.get("labels"),
    )
    from carbonpipe.integrations.kfp.shift import shift_for_step

    shift = shift_for_step(config, tracker, who.step)  # waits for a cleaner grid, if asked to
    try:
        handle = tracker.start_tracking(who.step, attempt=who.attempt, labels=who.labels)
        handle.scheduling = shift
    except BudgetExceeded as exc:
        if exc.on_exceed != "skip":
            print(f"carbonpipe: {step} not started: {exc}", file=sys.stderr)
            raise
        if config.get("returns_value"):
            raise StepSkipped(
                f"{step} was skipped by its carbon budget ({exc}), but its component returns a "
                "value that the next steps need; gate it with budget_gate and dsl.If instead",
                scope=exc.scope,
                used_kg=exc.used_kg,
                reserved_kg=exc.reserved_kg,
                limit_kg=exc.limit_kg,
                estimate_kg=exc.estimate_kg,
                on_exceed="skip",
            ) from exc
        print(f"carbonpipe: skipped {step}: {exc}", file=sys.stderr)
        publish_metrics(metrics, {"skipped": 1.0})
        return None
    with handle:  # inside, the function may call carbonpipe.current_step().add_units(N, NAME)
        result = func(**kwargs)
        if config.get("units_from_result"):
            from carbonpipe.functional_unit import units_of_result

            handle.units = units_of_result(result, config.get("functional_unit"))
    try:
        figures = tracker.stop_tracking(step)
        publish_metrics(metrics, step_metrics(figures))
        publish_record(record, figures.record)
        print(
            f"carbonpipe: step {who.step!r} attempt {who.attempt} of run {tracker.run_id} "
            f"recorded as {figures.record_id} in {tracker.settings.store}",
            file=sys.stderr,
        )
    except Exception as exc:  # the step succeeded; its figures are a by-product
        log.warning("carbonpipe: could not publish the metrics of %s: %s", step, exc)
        return result
    figures.raise_for_regression()  # only with `regression: fail`, after the record is written
    return result
