"""Who a step is: the (pipeline, run, step, attempt) an orchestrator gives a task attempt.

Orchestrators name a task attempt differently (Airflow: dag_id, run_id, task_id, map_index,
try_number; KFP: pipeline, run, task, iteration, retry). :func:`step_identity` turns those into
the fields of a record, so that retries are separate attempts, a re-delivery of the same attempt
is the same record (its id derives from these fields), and a mapped (fanned-out) task's
instances are distinct steps named ``task[i]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class StepIdentity:
    """The identity fields of one step attempt's record."""

    pipeline: str
    run_id: str
    step: str
    attempt: int
    labels: Mapping[str, str] = field(default_factory=dict)


def mapped_step_name(task: str, map_index: int | None) -> str:
    """Return ``task`` or, for one instance of a mapped task, ``task[map_index]``."""
    if map_index is None or map_index < 0:
        return task
    return f"{task}[{map_index}]"


def step_identity(
    *,
    orchestrator: str,
    pipeline: str,
    run_id: str,
    task: str,
    attempt: int = 1,
    map_index: int | None = None,
    native: Mapping[str, object] | None = None,
    labels: Mapping[str, str] | None = None,
) -> StepIdentity:
    """Build a step attempt's identity, labelled with the orchestrator's own names for it.

    Args:
        orchestrator: label prefix, e.g. ``airflow`` or ``kfp``.
        pipeline: the pipeline (Airflow: the dag_id).
        run_id: the run (Airflow: the DAG run's run_id).
        task: the task (Airflow: the task_id).
        attempt: the try, from 1 (Airflow: try_number).
        map_index: the instance of a mapped task; ``None`` or negative when not mapped.
        native: the orchestrator's identity fields, labelled ``<orchestrator>_<name>``.
        labels: the user's labels; they win over the generated ones.
    """
    checks = (
        ("orchestrator", orchestrator),
        ("pipeline", pipeline),
        ("run_id", run_id),
        ("task", task),
    )
    for name, value in checks:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an integer >= 1, got {attempt!r}")
    generated = {
        f"{orchestrator}_{name}": str(value)
        for name, value in (native or {}).items()
        if value is not None
    }
    return StepIdentity(
        pipeline=pipeline,
        run_id=run_id,
        step=mapped_step_name(task, map_index),
        attempt=attempt,
        labels={**generated, **dict(labels or {})},
    )
