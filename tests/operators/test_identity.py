"""carbonpipe.step_identity: how an Airflow task attempt becomes a record's identity.

(The module is core and imports no Airflow; its tests live here beside their only caller so far.)
"""

from __future__ import annotations

import pytest

from carbonpipe.record import make_record_id
from carbonpipe.step_identity import StepIdentity, mapped_step_name, step_identity


@pytest.mark.parametrize(
    ("map_index", "step"),
    [
        pytest.param(None, "train", id="not-mapped"),
        pytest.param(-1, "train", id="airflow-unmapped"),
        pytest.param(0, "train[0]", id="first-instance"),
        pytest.param(12, "train[12]", id="instance"),
    ],
)
def test_mapped_instances_are_distinct_steps(map_index: int | None, step: str) -> None:
    assert mapped_step_name("train", map_index) == step


def _identity(attempt: int = 1, map_index: int | None = None) -> StepIdentity:
    return step_identity(
        orchestrator="airflow",
        pipeline="dag",
        run_id="manual__1",
        task="train",
        attempt=attempt,
        map_index=map_index,
        native={"dag_id": "dag", "try_number": attempt, "map_index": map_index},
        labels={"airflow_dag_id": "mine", "model": "bert"},
    )


def test_native_fields_become_prefixed_labels_and_the_users_labels_win() -> None:
    identity = _identity(attempt=2, map_index=3)
    assert identity.step == "train[3]"
    assert identity.labels == {
        "airflow_dag_id": "mine",
        "airflow_try_number": "2",
        "airflow_map_index": "3",
        "model": "bert",
    }


def test_retries_are_new_records_and_a_rerun_of_the_same_try_is_the_same_record() -> None:
    def record_id(attempt: int) -> str:
        i = _identity(attempt=attempt)
        return make_record_id("p", i.pipeline, i.run_id, i.step, i.attempt)

    assert record_id(1) == record_id(1)
    assert record_id(1) != record_id(2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"task": ""}, "task must be a non-empty string", id="empty-task"),
        pytest.param({"attempt": 0}, "attempt must be an integer >= 1", id="attempt-0"),
        pytest.param({"attempt": True}, "attempt must be an integer >= 1", id="attempt-bool"),
    ],
)
def test_bad_identity_fields_are_named(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "orchestrator": "airflow",
        "pipeline": "p",
        "run_id": "r",
        "task": "t",
    }
    with pytest.raises(ValueError, match=match):
        step_identity(**{**base, **kwargs})  # type: ignore[arg-type]
