"""The nightly ESG pipeline (kfp.local) rolls up every budget's closed days after compacting."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.definitions import write_definition
from carbonpipe.budgets.rollup import closed_before
from carbonpipe.stores.local import LocalStore
from tests.budgets.test_rollup_cli import TRAIN, _charged, _rollups
from tests.pipelines.conftest import run_dir
from tests.pipelines.test_nightly_esg import run

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def test_the_nightly_pipeline_rolls_up_a_budget_given_in_code(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    root = tmp_path / "store"
    days = _charged(root, now)
    # A budget a step gave in code: its definition is in the store, not in carbon.yaml.
    write_definition(LocalStore(root), Budget(scope=TRAIN, period="total", limit_kg_co2e=1.0))
    assert _rollups(root, TRAIN) == []

    run(tmp_path, str(root))

    summary = json.loads((run_dir(tmp_path / "outputs") / "esg-aggregate" / "summary").read_text())
    closed = (closed_before(now) - days[0]).days
    [scope] = summary["rollups"]["scopes"]
    assert (scope["scope"], scope["period"], scope["days_listed"]) == (TRAIN, "total", closed)
    assert summary["rollups"]["failed"] == 0 and summary["rollups"]["error"] is None
    assert len(_rollups(root, TRAIN)) == closed
