"""What a KFP step knows about itself: its identity from KFP's placeholders, and its settings.

The pipeline's identity arrives as plain strings that the components fill from KFP's own
placeholders (run id, run name, task name); an empty string or an unresolved ``{{$...}}``
placeholder counts as not given. KFP artifacts are duck-typed (``log_metric``, ``path``,
``metadata``), so nothing here imports kfp.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from carbonpipe.errors import BudgetExceeded

if TYPE_CHECKING:
    from carbonpipe.budgets.budget import Budget
    from carbonpipe.record import Record

log = logging.getLogger("carbonpipe")

#: The output every tracked step adds to its user's signature.
METRICS_OUTPUT = "carbon_metrics"
#: The output that keeps the step's full record in the pipeline root, KFP's own artifact store:
#: the pod's spool dies with the pod, this copy does not (``carbonpipe flush --from ROOT``).
RECORD_OUTPUT = "carbon_record"
#: Inputs a tracked step adds, filled by the component from KFP placeholders or the pipeline.
IDENTITY_INPUTS = (
    "carbon_store",
    "carbon_pipeline",
    "carbon_run_id",
    "carbon_run_name",
    "carbon_task",
    "carbon_task_id",
    "carbon_loop",
)
#: ``carbon_loop`` when the task is in a ``dsl.ParallelFor`` but takes no input from its item.
LOOP_WITHOUT_ITEM = "*"
#: Settings a ``@carbon_component`` may fix at decoration time (see :func:`step_config`).
CONFIG_KEYS = (
    "project",
    "experiment",
    "pipeline",
    "team",
    "step",
    "store",
    "budget",
    "cloud_provider",
    "cloud_region",
    "country_iso_code",
    "tracking_mode",
    "labels",
    "shift_within",
    "expected_duration",
    "intensity_source",
    "intensity_zone",
    "functional_unit",
    "units_from_result",
    "function",
    "returns_value",
)
# Retries of one task share the run id and the task name; the attempt number is found from the
# records already in the store, looking no further than this.
_MAX_ATTEMPTS = 100
ATTEMPT_ENV = "CARBONPIPE_ATTEMPT"


class MetricsArtifact(Protocol):
    """What we use of ``kfp.dsl.Metrics``."""

    def log_metric(self, metric: str, value: float) -> None: ...


class RecordArtifact(Protocol):
    """What we use of ``kfp.dsl.Artifact``: its local file and its metadata."""

    path: str
    metadata: dict[str, Any]


class StepSkipped(BudgetExceeded):
    """A step whose budget says ``skip`` was not run, but its component must return a value."""


# ---------------------------------------------------------------------------------------------
# Identity and configuration


def _given(value: object) -> str | None:
    """Return ``value`` as a string, or ``None`` when empty or an unresolved KFP placeholder."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or (text.startswith("{{$") and text.endswith("}}")):
        return None
    return text


@dataclass(frozen=True)
class KfpContext:
    """Where a step runs, from KFP placeholders or the pipeline's parameters (all optional)."""

    store: str | None = None
    pipeline: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    task: str | None = None
    #: KFP's ``{{$.pipeline_task_uuid}}``: kfp.local draws one per task execution, the backend
    #: gives the enclosing DAG execution's id (one per ``ParallelFor`` iteration; the same for
    #: every retry of the task).
    task_id: str | None = None
    #: The inputs fed by the enclosing ``ParallelFor`` items, comma separated (``*``: none).
    loop: str | None = None

    @classmethod
    def from_inputs(cls, values: Mapping[str, object] | None = None) -> KfpContext:
        """Build from a mapping keyed ``store``, ``pipeline``, ``run_id``, ``run_name``, ``task``,
        ``task_id``, ``loop`` (or the same names prefixed ``carbon_``)."""
        values = dict(values or {})

        def get(key: str) -> str | None:
            return _given(values.get(key, values.get(f"carbon_{key}")))

        return cls(
            store=get("store"),
            pipeline=get("pipeline"),
            run_id=get("run_id"),
            run_name=get("run_name"),
            task=get("task"),
            task_id=get("task_id"),
            loop=get("loop"),
        )

    def native(self) -> dict[str, str | None]:
        """KFP's own names for the attempt, labelled ``kfp_<name>`` on the record."""
        return {
            "run_name": self.run_name,
            "task": self.task,
            "task_uuid": self.task_id,
            "pod": os.environ.get("KFP_POD_NAME") or None,
        }


def budget_to_dict(budget: Budget | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate a :class:`~carbonpipe.Budget` (or the mapping of its fields) into a plain dict."""
    if budget is None:
        return None
    from carbonpipe.budgets.budget import Budget

    if isinstance(budget, Budget):
        return asdict(budget)
    if isinstance(budget, Mapping):
        return asdict(Budget(**dict(budget)))
    raise TypeError(
        f"budget must be a carbonpipe.Budget or a mapping of its fields, got {type(budget).__name__}"
    )


def step_config(**settings: Any) -> dict[str, Any]:
    """Return the JSON-ready settings a ``@carbon_component`` embeds in its source.

    Raises ``TypeError`` naming an unknown setting, and validates the budget and labels now, at
    pipeline-definition time, rather than in the pod.
    """
    unknown = set(settings) - set(CONFIG_KEYS)
    if unknown:
        raise TypeError(f"unknown step setting(s) {sorted(unknown)}; accepted: {list(CONFIG_KEYS)}")
    out = {k: v for k, v in settings.items() if v is not None}
    if "budget" in out:
        out["budget"] = budget_to_dict(out["budget"])
    labels = out.get("labels")
    if labels is not None and not (
        isinstance(labels, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        raise TypeError("labels must map strings to strings, e.g. {'model': 'bert'}")
    if "labels" in out:
        out["labels"] = dict(out["labels"])
    if "shift_within" in out or "expected_duration" in out:
        from carbonpipe.integrations.kfp.shift import check_shift_settings

        check_shift_settings(out)  # durations in seconds; a bad one is refused now
    if "functional_unit" in out:
        from carbonpipe.functional_unit import tracker_unit_name

        out["functional_unit"] = tracker_unit_name(out["functional_unit"])
    if "cloud_provider" in out:
        from carbonpipe.location.providers import normalize_provider

        normalize_provider(out["cloud_provider"])
    # Everything here must survive being embedded in the component's source.
    json.dumps(out, allow_nan=False)
    return out


def publish_metrics(artifact: MetricsArtifact | None, values: Mapping[str, float | None]) -> None:
    """Log every finite number of ``values`` on a KFP ``Metrics`` artifact (if one is given)."""
    if artifact is None:
        return
    for name, value in values.items():
        if value is None:
            continue
        number = float(value)
        if math.isfinite(number):
            artifact.log_metric(name, number)


def publish_record(artifact: RecordArtifact | None, record: Record | None) -> None:
    """Write the step's full record to its ``carbon_record`` artifact, a second durable copy."""
    if artifact is None or record is None:
        return
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record.to_json())
    artifact.metadata.update(
        {"record_id": record.record_id, "key": record.key, "schema": record.schema}
    )


def _write_json(path: str | os.PathLike[str] | None, data: Any) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=False))


# ---------------------------------------------------------------------------------------------
# ESG aggregation


def _numbers(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in mapping.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, Mapping) and not prefix:
            out.update(_numbers(value, f"{key}_"))
    return out
