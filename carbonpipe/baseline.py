"""Carbon baselines per step, and the regression check the tracker runs at every step's end.

A baseline is the mean and spread of a step's emissions over its last ``n`` succeeded attempts,
stored at ``baselines/<pipeline>/<step>.json`` (``carbonpipe.baseline/1``; the budget gate reads
its ``mean_kg_co2e`` as the step's estimate). ``carbonpipe baseline create`` writes it by
create-if-absent or compare-and-swap, so two concurrent creators never interleave a document.

:func:`check_regression` compares one attempt with its baseline: above ``factor x mean`` it
logs a WARNING and returns an alert that the tracker puts into the record's ``alerts`` (and the
ESG report lists). Whether a regression should fail the Airflow task or KFP step is the
``regression: warn | fail`` setting (``CARBONPIPE_REGRESSION``, else carbon.yaml's top-level
``regression`` or ``esg.regression``), carried in the alert's ``action`` for those layers to act on.
It costs one GET per (store, pipeline, step) per process and ``CACHE_TTL_S``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

from carbonpipe.budgets.charges import baseline_key
from carbonpipe.errors import ConfigError, ObjectNotFound, PreconditionFailed, StoreError
from carbonpipe.record import Record, parse_utc, utc_iso
from carbonpipe.stores.base import Store

# Backoff jitter from the OS, not the global random state (which a user's program, or a
# property-testing library, may be relying on).
_JITTER = random.SystemRandom()

log = logging.getLogger(__name__)

BASELINE_SCHEMA = "carbonpipe.baseline/1"
REGRESSION_KIND = "carbon_regression"
ACTIONS = ("warn", "fail")
ACTION_ENV = "CARBONPIPE_REGRESSION"
DEFAULT_FACTOR = 1.2
DEFAULT_RUNS = 5
DEFAULT_LOOKBACK_DAYS = 90
# A process re-reads a step's baseline at most this often, so a new baseline reaches
# long-lived workers (an Airflow worker, a notebook) without a restart.
CACHE_TTL_S = 300.0
_CAS_DEADLINE_S = 30.0


@dataclass(frozen=True)
class Baseline:
    """A step's emissions over its last attempts: mean, sample standard deviation, samples."""

    pipeline: str
    step: str
    mean_kg_co2e: float
    std_kg_co2e: float
    samples_kg_co2e: tuple[float, ...]
    record_ids: tuple[str, ...]
    first_ended_at: str
    last_ended_at: str
    created_at: str = ""

    @property
    def runs(self) -> int:
        """How many attempts the baseline summarises."""
        return len(self.samples_kg_co2e)

    def to_dict(self) -> dict[str, Any]:
        """Return the stored document."""
        return {
            "schema": BASELINE_SCHEMA,
            "pipeline": self.pipeline,
            "step": self.step,
            "mean_kg_co2e": self.mean_kg_co2e,
            "std_kg_co2e": self.std_kg_co2e,
            "std_kind": "sample (n-1)",
            "runs": self.runs,
            "samples_kg_co2e": list(self.samples_kg_co2e),
            "record_ids": list(self.record_ids),
            "first_ended_at": self.first_ended_at,
            "last_ended_at": self.last_ended_at,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Read a stored document; raise ``ValueError`` naming what is wrong."""
        mean = data.get("mean_kg_co2e")
        if (
            isinstance(mean, bool)
            or not isinstance(mean, (int, float))
            or not math.isfinite(mean)
            or mean < 0
        ):
            raise ValueError(f"mean_kg_co2e must be a finite number >= 0, got {mean!r}")
        samples = data.get("samples_kg_co2e") or []
        return cls(
            pipeline=str(data.get("pipeline", "")),
            step=str(data.get("step", "")),
            mean_kg_co2e=float(mean),
            std_kg_co2e=float(data.get("std_kg_co2e") or 0.0),
            samples_kg_co2e=tuple(float(s) for s in samples),
            record_ids=tuple(str(r) for r in data.get("record_ids") or []),
            first_ended_at=str(data.get("first_ended_at", "")),
            last_ended_at=str(data.get("last_ended_at", "")),
            created_at=str(data.get("created_at", "")),
        )


def compute_baseline(pipeline: str, step: str, records: Iterable[Record]) -> Baseline:
    """Summarise ``records`` (oldest to newest order is kept in the samples)."""
    import statistics  # only here: a step's regression check must not pay for it

    recs = sorted(records, key=lambda r: (parse_utc(r.ended_at), r.record_id))
    if not recs:
        raise ValueError(f"no records to build a baseline of {pipeline}/{step} from")
    samples = tuple(r.emissions_kg_co2e for r in recs)
    return Baseline(
        pipeline=pipeline,
        step=step,
        mean_kg_co2e=statistics.fmean(samples),
        std_kg_co2e=statistics.stdev(samples) if len(samples) > 1 else 0.0,
        samples_kg_co2e=samples,
        record_ids=tuple(r.record_id for r in recs),
        first_ended_at=utc_iso(parse_utc(recs[0].ended_at)),
        last_ended_at=utc_iso(parse_utc(recs[-1].ended_at)),
    )


def last_records(
    store: Store,
    pipeline: str,
    step: str,
    runs: int = DEFAULT_RUNS,
    *,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    include_failed: bool = False,
    today: date | None = None,
) -> list[Record]:
    """Return the step's last ``runs`` attempts (succeeded ones unless ``include_failed``)."""
    from carbonpipe.report import read_records, record_keys

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    today = today or datetime.now(timezone.utc).date()
    found: list[Record] = []
    # Newest day first, so a busy step needs only its last day or two listed and read.
    for back in range(lookback_days + 1):
        day = today - timedelta(days=back)
        keys = list(record_keys(store, start=day, end=day, pipeline=pipeline))
        for rec in read_records(store, keys):
            if (
                rec.pipeline == pipeline
                and rec.step == step
                and (include_failed or rec.status == "succeeded")
            ):
                found.append(rec)
        if len(found) >= runs:
            break
    found.sort(key=lambda r: (parse_utc(r.ended_at), r.record_id), reverse=True)
    return found[:runs]


def create_baseline(
    store: Store,
    pipeline: str,
    step: str,
    *,
    runs: int = DEFAULT_RUNS,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    include_failed: bool = False,
    today: date | None = None,
    now: datetime | None = None,
) -> Baseline:
    """Build the step's baseline from its last ``runs`` attempts and store it (create or replace)."""
    records = last_records(
        store,
        pipeline,
        step,
        runs,
        lookback_days=lookback_days,
        include_failed=include_failed,
        today=today,
    )
    if not records:
        raise ValueError(
            f"no {'' if include_failed else 'succeeded '}records of {pipeline}/{step} in the last "
            f"{lookback_days} days: run the step first, or widen --lookback-days"
        )
    if len(records) < runs:
        log.warning("baseline %s/%s: only %d of %d runs found", pipeline, step, len(records), runs)
    computed = compute_baseline(pipeline, step, records)
    base = replace(computed, created_at=utc_iso(now or datetime.now(timezone.utc)))
    save_baseline(store, base)
    return base


def save_baseline(store: Store, base: Baseline) -> str:
    """Write a baseline: create it, or replace the version read just before (compare-and-swap)."""
    key = baseline_key(base.pipeline, base.step)
    data = json.dumps(base.to_dict(), indent=2, sort_keys=True, allow_nan=False).encode()
    deadline = time.monotonic() + _CAS_DEADLINE_S
    attempt = 0
    while True:
        try:
            try:
                current = store.get(key)
            except ObjectNotFound:
                version = store.put_if_absent(key, data)
            else:
                version = store.replace(key, data, if_version=current.version)
            break
        except PreconditionFailed:
            # Another writer got in between: read its version and try again, after a pause.
            if time.monotonic() > deadline:
                raise StoreError(
                    f"could not write {key}: it kept changing for {_CAS_DEADLINE_S:g} s"
                ) from None
            time.sleep(_JITTER.uniform(0, min(0.5, 0.005 * 2**attempt)))
            attempt += 1
    _forget(store, base.pipeline, base.step)
    return version


def load_baseline(store: Store, pipeline: str, step: str) -> Baseline | None:
    """Read a step's baseline, or None when there is none (or it is unreadable, which is logged)."""
    key = baseline_key(pipeline, step)
    try:
        raw = store.get(key).data
    except ObjectNotFound:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Baseline.from_dict(data)
    except ValueError as exc:
        log.warning("carbonpipe: baseline %s is unusable (%s); no regression check", key, exc)
        return None


# ---------------------------------------------------------------------------------------------
# The regression check (cheap: the tracker calls it at every step's end)

_cache: dict[tuple[str, str, str], tuple[float, Baseline | None]] = {}
_action_cache: dict[tuple[str, int], str] = {}
_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached baseline and setting (tests, or after editing carbon.yaml)."""
    with _lock:
        _cache.clear()
        _action_cache.clear()


def _forget(store: Store, pipeline: str, step: str) -> None:
    with _lock:
        _cache.pop((store.uri, pipeline, step), None)


def _cached_baseline(store: Store, pipeline: str, step: str) -> Baseline | None:
    key = (store.uri, pipeline, step)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    base = load_baseline(store, pipeline, step)
    with _lock:
        _cache[key] = (now + CACHE_TTL_S, base)
    return base


def regression_action(config: Mapping[str, Any] | None = None) -> str:
    """Return ``warn`` or ``fail``: env ``CARBONPIPE_REGRESSION``, else carbon.yaml, else warn."""
    env = os.environ.get(ACTION_ENV)
    if env:
        return _check_action(env, ACTION_ENV)
    if config is None:
        from carbonpipe.config import config_path, load_config_file

        path = config_path()
        stamp = (str(path), path.stat().st_mtime_ns if path and path.is_file() else 0)
        with _lock:
            if stamp in _action_cache:
                return _action_cache[stamp]
        config = load_config_file(path)[0] if path else {}
        action = _action_from(config)
        with _lock:
            _action_cache[stamp] = action
        return action
    return _action_from(config)


def _action_from(config: Mapping[str, Any]) -> str:
    esg = config.get("esg") if isinstance(config.get("esg"), Mapping) else {}
    value = config.get("regression", (esg or {}).get("regression", "warn"))
    return _check_action(value, "regression")


def _check_action(value: Any, where: str) -> str:
    text = str(value).strip().lower()
    if text not in ACTIONS:
        raise ConfigError(f"{where} must be one of {', '.join(ACTIONS)}, got {value!r}")
    return text


def check_regression(
    store: Store,
    pipeline: str,
    step: str,
    emissions_kg: float,
    factor: float = DEFAULT_FACTOR,
    *,
    action: str | None = None,
) -> dict[str, Any] | None:
    """Return a regression alert if ``emissions_kg`` exceeds ``factor`` x the step's baseline mean."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(f"factor must be a number > 0 (1.2 = 20% above the mean), got {factor!r}")
    base = _cached_baseline(store, pipeline, step)
    if base is None or base.mean_kg_co2e <= 0:
        return None
    threshold = factor * base.mean_kg_co2e
    if not emissions_kg > threshold:
        return None
    act = _check_action(action, "action") if action is not None else regression_action()
    increase = 100.0 * (emissions_kg - base.mean_kg_co2e) / base.mean_kg_co2e
    message = (
        f"carbon regression in {pipeline}/{step}: {emissions_kg * 1000:.4g} g CO2e is "
        f"{increase:.1f}% above its baseline of {base.mean_kg_co2e * 1000:.4g} g "
        f"(threshold {factor:g} x mean, {base.runs} runs)"
    )
    log.warning("carbonpipe: %s", message)
    return {
        "kind": REGRESSION_KIND,
        "action": act,
        "pipeline": pipeline,
        "step": step,
        "emissions_kg_co2e": emissions_kg,
        "baseline_mean_kg_co2e": base.mean_kg_co2e,
        "baseline_std_kg_co2e": base.std_kg_co2e,
        "baseline_runs": base.runs,
        "factor": float(factor),
        "threshold_kg_co2e": threshold,
        "increase_percent": round(increase, 2),
        "baseline_key": baseline_key(pipeline, step),
        "message": message,
    }
