"""Fan-outs: every dsl.ParallelFor iteration of a tracked step is its own record (kfp.local)."""

from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

LOCATION = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}


def records(store_uri: str) -> list[Record]:
    store = open_store(store_uri)
    return [
        Record.from_json(store.get(k).data) for k in store.list("records/") if k.endswith(".json")
    ]


def sweep_pipeline(items: list[Any]) -> Any:
    from kfp import dsl

    from carbonpipe.components import carbon_component

    @carbon_component(project="sweeps", **LOCATION)
    def train(learning_rate: float) -> float:
        return learning_rate * 2

    @dsl.pipeline(name="sweep")
    def sweep(store: str) -> None:
        with dsl.ParallelFor(items) as lr:
            train(learning_rate=lr, carbon_store=store)

    return sweep


@pytest.mark.parametrize("ways", [3, 10])
def test_every_iteration_of_a_fan_out_is_its_own_record(tmp_path: Path, ways: int) -> None:
    from carbonpipe.components import run_local

    items = [round(0.001 * (i + 1), 3) for i in range(ways)]
    store = str(tmp_path / "store")
    run_local(sweep_pipeline(items), pipeline_root=tmp_path / "outputs", store=store)

    recs = records(store)
    assert len(recs) == ways
    assert len({r.record_id for r in recs}) == ways
    assert {r.status for r in recs} == {"succeeded"}
    assert {r.attempt for r in recs} == {1}
    assert len({r.run_id for r in recs}) == 1
    assert sorted(r.step for r in recs) == sorted(f"train[{lr}]" for lr in items)
    assert sorted(r.labels["kfp_loop_item"] for r in recs) == sorted(str(lr) for lr in items)
    assert {r.labels["kfp_task"] for r in recs} == {"train"}
    assert len({r.labels["kfp_task_uuid"] for r in recs}) == ways


def test_an_iteration_without_an_input_from_the_item_is_named_by_its_task_uuid(
    tmp_path: Path,
) -> None:
    from kfp import dsl

    from carbonpipe.components import carbon_component, run_local

    @carbon_component(project="sweeps", **LOCATION)
    def tick() -> None:
        pass

    @dsl.pipeline(name="ticks")
    def ticks(store: str) -> None:
        with dsl.ParallelFor([1, 2, 3]):
            tick(carbon_store=store)

    store = str(tmp_path / "store")
    run_local(ticks, pipeline_root=tmp_path / "outputs", store=store)
    recs = records(store)
    assert len(recs) == 3 and {r.status for r in recs} == {"succeeded"}
    assert sorted(r.step for r in recs) == sorted(
        f"tick[{r.labels['kfp_task_uuid']}]" for r in recs
    )
    assert all("kfp_loop_item" not in r.labels for r in recs)


def test_the_fields_of_a_dict_item_name_the_step(
    tmp_path: Path,
) -> None:
    from kfp import dsl

    from carbonpipe.components import carbon_component, run_local

    @carbon_component(project="sweeps", **LOCATION)
    def fit(region: str, depth: str) -> None:
        pass

    @dsl.pipeline(name="grid")
    def grid(store: str) -> None:
        with dsl.ParallelFor(
            [{"region": "eu", "depth": "2"}, {"region": "us", "depth": "3"}]
        ) as cfg:
            fit(region=cfg.region, depth=cfg.depth, carbon_store=store)

    store = str(tmp_path / "store")
    run_local(grid, pipeline_root=tmp_path / "outputs", store=store)
    assert sorted(r.step for r in records(store)) == [
        "fit[depth=2,region=eu]",
        "fit[depth=3,region=us]",
    ]


def test_passing_carbon_task_still_names_the_step_but_warns() -> None:
    from kfp import dsl

    from carbonpipe.components import carbon_component

    @carbon_component(project="sweeps", **LOCATION)
    def named() -> None:
        pass

    with pytest.warns(DeprecationWarning, match="carbon_task is not needed"):

        @dsl.pipeline(name="named")
        def pipe() -> None:
            with dsl.ParallelFor([1, 2]) as i:
                named(carbon_task=f"named-{i}")

    task = pipe.pipeline_spec.components["comp-for-loop-2"].dag.tasks["named"]
    params = task.inputs.parameters
    assert params["carbon_loop"].runtime_value.constant.string_value == ""


def test_a_retry_is_the_next_attempt_of_its_own_iteration(tmp_path: Path) -> None:
    from carbonpipe.integrations.kfp.tracked import run_tracked_step

    store = str(tmp_path / "store")

    def identity(task_id: str) -> dict[str, str]:
        return {
            "carbon_store": store,
            "carbon_pipeline": "sweep",
            "carbon_run_id": "run-1",
            "carbon_task": "train",
            "carbon_task_id": task_id,
            "carbon_loop": "learning_rate",
        }

    def flaky(learning_rate: float) -> None:
        raise RuntimeError("boom")

    config = {"function": "train", **LOCATION}
    with pytest.raises(RuntimeError, match="boom"):
        run_tracked_step(flaky, {"learning_rate": 0.1}, config=config, identity=identity("11"))
    run_tracked_step(
        lambda learning_rate: None, {"learning_rate": 0.2}, config=config, identity=identity("22")
    )
    run_tracked_step(
        lambda learning_rate: None, {"learning_rate": 0.1}, config=config, identity=identity("11")
    )

    got = sorted((r.step, r.attempt, r.status, r.labels["kfp_task_uuid"]) for r in records(store))
    assert got == [
        ("train[0.1]", 1, "failed", "11"),
        ("train[0.1]", 2, "succeeded", "11"),
        ("train[0.2]", 1, "succeeded", "22"),
    ]


def test_an_artifact_item_names_the_iteration_by_its_task_uuid(tmp_path: Path) -> None:
    from carbonpipe.integrations.kfp.tracked import run_tracked_step

    class Dataset:  # what a ParallelFor over artifacts hands the step: not a JSON value
        uri = "/tmp/outputs/shard"

    store = str(tmp_path / "store")
    identity = {
        "carbon_store": store,
        "carbon_pipeline": "shards",
        "carbon_run_id": "run-1",
        "carbon_task": "score",
        "carbon_task_id": "4242",
        "carbon_loop": "shard",
    }
    config = {"function": "score", **LOCATION}
    run_tracked_step(lambda shard: None, {"shard": Dataset()}, config=config, identity=identity)
    [rec] = records(store)
    assert rec.step == "score[4242]" and "kfp_loop_item" not in rec.labels
