"""A budget given in code leaves its definition in the store, once, with the history of its changes.

The tracker as users call it on a local folder and on moto's S3; concurrent writers on a local
folder and on a concurrently serving moto; a store whose definition objects fail (through a
:class:`~tests.fault_proxy.FaultProxy`) never stops or holds the step.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonpipe import Budget, CarbonTracker
from carbonpipe.budgets.budget import PERIODS
from carbonpipe.budgets.definitions import (
    LISTED_KINDS,
    budget_fields,
    definition_history,
    definition_key,
    read_definitions,
    remember_definition,
    union_budgets,
    write_definition,
)
from carbonpipe.budgets.period import period_window
from carbonpipe.stores.base import Store
from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.memory import MemoryStore
from carbonpipe.stores.s3 import S3Store
from tests.fault_proxy import Flaky

SCOPE = "pipeline:defined"
KEY = "budgets/definitions/pipeline=defined/month.json"
HISTORY = "budgets/definitions/pipeline=defined/month/"


def _budget(limit_kg: float = 1.0, **overrides: Any) -> Budget:
    return Budget(
        scope=SCOPE,
        period="month",
        limit_kg_co2e=limit_kg,
        default_step_estimate_kg=0.001,
        **overrides,
    )


def _steps(store: Store, budget: Budget, *names: str) -> None:
    """Run tracked steps gated by ``budget``, as a user's code does."""
    tracker = CarbonTracker(
        project_name="defined",
        output_dir=store,
        budget=budget,
        cloud_provider="gcp",
        cloud_region="europe-west1",
    )
    for name in names:
        with tracker.start_tracking(name):
            pass


def _doc(store: Store, key: str = KEY) -> dict[str, Any]:
    return dict(json.loads(store.get(key).data))


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_budget_given_in_code_is_defined_once_and_its_changes_kept(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store = request.getfixturevalue(f"{backend}_store")
    _steps(store, _budget(1.0), "prep", "train")
    first = _doc(store)
    assert first["revision"] == 1 and first["schema"] == "carbonpipe.budget_definition/1"
    assert first["budget"]["limit_kg_co2e"] == 1.0 and first["budget"]["scope"] == SCOPE
    assert first["recorded_by"] == {"pipeline": "defined", "step": "prep"}
    version = store.get(KEY).version

    _steps(store, _budget(1.0), "train")  # a new process's tracker: read, same, nothing written
    assert store.get(KEY).version == version
    assert list(store.list(HISTORY)) == []

    _steps(store, _budget(2.5, warn_ratio=0.5), "train")
    now = _doc(store)
    assert (now["revision"], now["budget"]["limit_kg_co2e"], now["budget"]["warn_ratio"]) == (
        2,
        2.5,
        0.5,
    )
    assert list(store.list(HISTORY)) == [f"{HISTORY}00000001.json"]
    assert _doc(store, f"{HISTORY}00000001.json") == first  # the old one, byte for byte
    limits = [d.budget.limit_kg_co2e for d in definition_history(store, SCOPE, "month")]
    assert limits == [1.0, 2.5]
    [current] = read_definitions(store)
    assert current.budget == _budget(2.5, warn_ratio=0.5) and current.key == KEY


def test_a_definition_is_read_once_per_store_and_process(flaky_store: Flaky) -> None:
    budget = _budget(3.0)
    assert remember_definition(flaky_store.store, budget) == "created"
    asked = flaky_store.proxy.requests
    for _ in range(5):
        assert remember_definition(flaky_store.store, budget) == "known"
    assert flaky_store.proxy.requests == asked  # no request at all
    other = _budget(4.0)
    assert remember_definition(flaky_store.store, other) == "replaced"
    assert remember_definition(flaky_store.store, other) == "known"


@pytest.mark.parametrize("backend", ["local", "s3_concurrent"])
def test_concurrent_writers_lose_no_definition(
    backend: str, request: pytest.FixtureRequest
) -> None:
    shared: Store = request.getfixturevalue(f"{backend}_store")
    limits = [float(i) for i in range(1, 9)]
    start = threading.Barrier(len(limits))
    done: dict[float, str] = {}

    def writer(limit: float) -> None:
        store: Store  # each writer its own client, as each process has
        if isinstance(shared, LocalStore):
            store = LocalStore(shared.root)
        else:
            assert isinstance(shared, S3Store)
            store = S3Store(
                shared.bucket, shared.prefix, endpoint_url=shared.endpoint_url, max_attempts=2
            )
        start.wait()
        done[limit] = write_definition(store, _budget(limit))

    threads = [threading.Thread(target=writer, args=(lim,)) for lim in limits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(done) == limits
    assert sorted(done.values()).count("created") == 1
    history = definition_history(shared, SCOPE, "month")
    # Every definition became current at some time, and every one replaced was kept.
    assert sorted(d.budget.limit_kg_co2e for d in history) == limits
    assert [d.revision for d in history] == list(range(1, len(limits) + 1))


def test_a_failing_definition_write_never_stops_or_holds_the_step(flaky_store: Flaky) -> None:
    proxy = flaky_store.proxy
    proxy.fail(403, match="budgets/definitions")  # only the definition objects are refused
    _steps(flaky_store.store, _budget(1.0), "train")
    [record] = list(flaky_store.direct.list("records/v2/"))
    assert record
    assert not flaky_store.direct.exists(KEY)
    window = period_window("month", datetime.now(timezone.utc))
    assert list(flaky_store.direct.list(f"budgets/pipeline=defined/{window.key_part}/"))

    # A definition write that takes its time holds the step no longer than the gate's deadline.
    proxy.fail(503, match="budgets/definitions", delay_s=6.0)
    t0 = time.monotonic()
    assert remember_definition(flaky_store.store, _budget(2.0), timeout_s=1.0) is None
    assert time.monotonic() - t0 < 4.0
    proxy.up()
    assert remember_definition(flaky_store.store, _budget(2.0)) == "created"


def test_carbon_yaml_wins_where_both_define_a_scopes_period() -> None:
    store = MemoryStore("union")
    write_definition(store, _budget(9.0))
    write_definition(store, Budget(scope=SCOPE, period="year", limit_kg_co2e=90.0))
    write_definition(store, Budget(scope="team:ranking", period="month", limit_kg_co2e=5.0))
    configured = [_budget(1.0)]
    got = [
        (s.budget.scope, s.budget.period, s.budget.limit_kg_co2e, s.source)
        for s in union_budgets(configured, read_definitions(store))
    ]
    assert got == [
        (SCOPE, "month", 1.0, "carbon.yaml"),
        (SCOPE, "year", 90.0, "store"),
        ("team:ranking", "month", 5.0, "store"),
    ]
    assert [d.budget.scope for d in read_definitions(store, "team:ranking")] == ["team:ranking"]


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
budgets = st.builds(
    Budget,
    scope=st.builds(
        lambda kind, name: f"{kind}:{name}",
        st.sampled_from(["pipeline", "team", "run"]),
        names.filter(lambda n: n.strip() != ""),
    ),
    period=st.sampled_from(PERIODS),
    limit_kg_co2e=st.floats(min_value=1e-6, max_value=1e12, allow_nan=False),
    warn_ratio=st.floats(min_value=0.01, max_value=1.0),
    on_exceed=st.sampled_from(["fail", "skip"]),
    default_step_estimate_kg=st.floats(min_value=0, max_value=1e6),
    when_unavailable=st.sampled_from(["refuse", "run"]),
    lease_s=st.floats(min_value=1.0, max_value=86400.0),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=budgets, second=budgets)
def test_any_definition_reads_back_exactly_and_changes_only_when_it_differs(
    first: Budget, second: Budget
) -> None:
    store = MemoryStore("property")
    assert write_definition(store, first) == "created"
    assert write_definition(store, first) == "unchanged"
    [read] = read_definitions(store)
    assert read.budget == first and read.revision == 1
    key = definition_key(first.scope, first.period)
    assert json.loads(store.get(key).data)["budget"] == budget_fields(first)

    again = Budget(**{**budget_fields(second), "scope": first.scope, "period": first.period})
    outcome = write_definition(store, again)
    assert outcome == ("unchanged" if again == first else "replaced")
    history = definition_history(store, first.scope, first.period)
    assert [d.budget for d in history] == ([first] if again == first else [first, again])


def test_a_per_run_budget_is_defined_but_left_out_of_listings(local_store: Store) -> None:
    tracker = CarbonTracker(
        project_name="defined",
        output_dir=local_store,
        carbon_budget_g=1000.0,
        cloud_provider="gcp",
        cloud_region="europe-west1",
    )
    with tracker.start_tracking("train"):
        pass
    _steps(local_store, _budget(1.0), "train")
    scope = f"run:{tracker.run_id}"
    [own] = read_definitions(local_store, scope)
    assert (own.budget.period, own.budget.limit_kg_co2e) == ("total", 1.0)
    assert {d.budget.scope for d in read_definitions(local_store)} == {scope, SCOPE}
    # One definition per run: listings of every budget (ESG, budget status) leave them out.
    assert [d.budget.scope for d in read_definitions(local_store, kinds=LISTED_KINDS)] == [SCOPE]
