"""A budget given on the command line is visible afterwards: ``budget status`` without
``--limit-kg`` and the ESG report find it in the store. Real subprocesses, a local folder
and moto's S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from carbonpipe.stores.base import Store
from carbonpipe.stores.local import LocalStore
from tests.object_servers import S3_BUCKET, STORE_PREFIX

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]
KEY = "budgets/definitions/pipeline=g/month.json"
HISTORY = "budgets/definitions/pipeline=g/month/"


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args, capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


def _gated_run(store: str, limit_kg: float, env: dict[str, str] | None = None) -> None:
    args = ["run", "--store", store, "--pipeline", "g", "--step", "train", *WHERE]
    args += ["--budget-scope", "pipeline:g", "--budget-kg", str(limit_kg)]
    args += ["--budget-estimate-kg", "0.001", "--", sys.executable, "-c", "pass"]
    done = _cli(args, env)
    assert done.returncode == 0, done.stderr


def _status(store: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = _cli(["budget", "status", "pipeline:g", "--store", store, "--json"], env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_budget_status_finds_a_budget_given_on_the_command_line(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    refused = _cli(["budget", "status", "pipeline:g", "--store", store])
    assert refused.returncode == 2 and "pass --limit-kg" in refused.stderr

    _gated_run(store, 1.0)
    _gated_run(store, 1.0)
    local = LocalStore(store)
    assert list(local.list(HISTORY)) == []  # the same budget again: no new definition
    shown = _status(store)
    assert shown["limit_kg"] == 1.0 and shown["charges"] == 2
    assert str(shown["defined_in"]).startswith(f"store definition {KEY} (revision 1")
    text = _cli(["budget", "status", "pipeline:g", "--store", store])
    assert text.returncode == 0, text.stderr
    head, said = text.stdout.splitlines()
    assert head.startswith("pipeline:g [month]: ")
    assert said.startswith(f"  defined in: store definition {KEY} (revision 1, recorded 20")

    _gated_run(store, 3.0)
    assert list(local.list(HISTORY)) == [f"{HISTORY}00000001.json"]
    assert json.loads(local.get(f"{HISTORY}00000001.json").data)["budget"]["limit_kg_co2e"] == 1.0
    shown = _status(store)
    assert shown["limit_kg"] == 3.0 and "(revision 2" in str(shown["defined_in"])

    # carbon.yaml is the configuration: where it defines the scope's period, it is used.
    cfg = tmp_path / "carbon.yaml"
    cfg.write_text("budgets:\n  - {scope: 'pipeline:g', period: month, limit_kg_co2e: 2}\n")
    shown = _status(store, {**os.environ, "CARBONPIPE_CONFIG": str(cfg)})
    assert shown["limit_kg"] == 2.0 and shown["defined_in"] == "carbon.yaml"


def test_the_esg_report_lists_a_budget_given_on_the_command_line(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    out = tmp_path / "esg"
    esg = ["esg", "--store", store, "--period", month, "--out", str(out), "--json"]

    _gated_run(store, 1.0)  # a record, and the budget only on the command line
    done = _cli(esg)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    [budget] = report["budgets"]
    assert (budget["scope"], budget["period"], budget["limit_kg_co2e"]) == (
        "pipeline:g",
        "month",
        1.0,
    )
    assert budget["defined_in"] == "store" and budget["charges"] == 1
    page = (out / "report.html").read_text()
    assert "No budgets configured" not in page and "pipeline:g" in page


def test_a_budget_given_on_the_command_line_is_defined_on_s3(s3_store: Store) -> None:
    uri = f"s3://{S3_BUCKET}/{STORE_PREFIX}"
    _gated_run(uri, 0.5)
    definition = json.loads(s3_store.get(KEY).data)
    assert definition["revision"] == 1 and definition["budget"]["limit_kg_co2e"] == 0.5
    _gated_run(uri, 0.5)
    assert list(s3_store.list(HISTORY)) == []
    shown = _status(uri)
    assert shown["limit_kg"] == 0.5 and str(shown["defined_in"]).startswith("store definition")
    _gated_run(uri, 0.75)
    assert list(s3_store.list(HISTORY)) == [f"{HISTORY}00000001.json"]
    assert _status(uri)["limit_kg"] == 0.75
