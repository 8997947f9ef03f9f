"""A team on Azure: a tracked step, its budget, a flush after an outage and an ESG report, on az://.

Everything goes through the command line in subprocesses, as a KFP or Airflow task would run it,
with the account from ``AZURE_STORAGE_CONNECTION_STRING`` (Azurite's, set by ``azure_store``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from carbonpipe.record import Record
from tests.fault_proxy import FaultProxy

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "azure", "--region", "westeurope"]


def _carbonpipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env if env is not None else dict(os.environ),
    )


def test_a_tracked_step_and_an_esg_report_on_az(azure_store: Any) -> None:
    uri = azure_store.uri  # az://cp-test-.../carbon
    for step in ("prep", "train"):
        out = _carbonpipe(
            "run", "--store", uri, *WHERE, "--pipeline", "churn", "--step", step, "--", "true"
        )
        assert out.returncode == 0, out.stderr
    keys = [k for k in azure_store.list("records/") if k.endswith(".json")]
    assert len(keys) == 2
    records = [Record.from_json(azure_store.get(k).data) for k in keys]
    assert sorted(r.step for r in records) == ["prep", "train"]
    assert {r.location["region"] for r in records} == {"westeurope"}
    total_kg = sum(r.emissions_kg_co2e for r in records)

    month = datetime.now(timezone.utc).strftime("%Y-%m")
    report = _carbonpipe("esg", "--store", uri, "--period", month, "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert abs(data["totals"]["total_emissions_kg_co2e"] - total_kg) <= 1e-12
    artifacts = data["artifacts"]
    urls = list(artifacts.values() if isinstance(artifacts, dict) else artifacts)
    assert urls and all(str(u).startswith(f"{uri}/esg/{month}/") for u in urls), urls
    stored = json.loads(azure_store.get(f"esg/{month}/report.json").data)
    assert (
        stored["executive_summary"]["total_emissions_kg_co2e"]
        == (data["totals"]["total_emissions_kg_co2e"])
    )
    assert stored["activity"]["step_attempts"] == 2
    page = azure_store.client.get_blob_client(f"carbon/esg/{month}/report.html")
    assert page.get_blob_properties().content_settings.content_type.startswith("text/html")


def test_a_step_during_an_outage_is_spooled_and_flushed_to_az(
    azure_store: Any, azure_endpoint: str, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(azure_endpoint, "azure")
    env = {**os.environ, "AZURE_STORAGE_BLOB_ENDPOINT": proxy.url}
    proxy.down()
    out = _carbonpipe(
        "run", "--store", azure_store.uri, *WHERE, "--step", "outage", "--", "true", env=env
    )
    assert out.returncode == 0, out.stderr
    assert "spooled" in out.stderr
    assert [k for k in azure_store.list("records/") if k.endswith(".json")] == []
    proxy.up()
    flushed = _carbonpipe("flush", "--json", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["remaining"] == 0
    [key] = [k for k in azure_store.list("records/") if k.endswith(".json")]
    assert Record.from_json(azure_store.get(key).data).step == "outage"
