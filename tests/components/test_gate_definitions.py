"""The KFP ``budget_gate`` component leaves its budget's definition in the store, as the
tracker does: run locally with kfp.local on a local store folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.budgets.definitions import read_definitions
from carbonpipe.stores.local import LocalStore

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def _gate_pipeline() -> Any:
    from kfp import dsl

    from carbonpipe.components import budget_gate

    def pipe(store, limit):  # type: ignore[no-untyped-def]
        return budget_gate(
            scope="pipeline:kfp-defined",
            limit_kg_co2e=limit,
            step="train",
            store=store,
            estimate_kg_co2e=0.001,
        ).outputs["decision"]

    pipe.__annotations__ = {"store": str, "limit": float, "return": str}
    return dsl.pipeline(name="kfp-defined")(pipe)


def test_the_gate_component_records_the_budget_it_checked(tmp_path: Path) -> None:
    from carbonpipe.components import run_local

    store = tmp_path / "store"
    for limit in (1.0, 1e-9):  # within budget, then a limit the estimate does not fit
        task = run_local(
            _gate_pipeline(),
            pipeline_root=tmp_path / f"out-{limit}",
            store=str(store),
            limit=limit,
        )
        assert task.output == ("run" if limit == 1.0 else "skip")
    local = LocalStore(store)
    [current] = read_definitions(local)
    assert (current.budget.scope, current.budget.limit_kg_co2e) == ("pipeline:kfp-defined", 1e-9)
    assert current.budget.on_exceed == "skip" and current.revision == 2
    [old] = local.list("budgets/definitions/pipeline=kfp-defined/month/")
    assert json.loads(local.get(old).data)["budget"]["limit_kg_co2e"] == 1.0
