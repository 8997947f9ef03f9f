"""The public API is what ``__all__`` says, and importing it stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import carbonpipe

PUBLIC = {
    "CarbonTracker",
    "CarbonMetrics",
    "carbon_tracked",
    "detect_location",
    "CarbonpipeError",
    "open_store",
    "Budget",
    "BudgetLedger",
    "BudgetExceeded",
}


def test_all_lists_the_promised_public_names() -> None:
    assert set(carbonpipe.__all__) >= PUBLIC


def test_every_exported_name_resolves() -> None:
    for name in carbonpipe.__all__:
        assert getattr(carbonpipe, name) is not None, name
    assert sorted(carbonpipe.__all__) == carbonpipe.__all__


def test_importing_carbonpipe_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, json, carbonpipe, carbonpipe.tracker;"
        "print(json.dumps(sorted(m for m in ('codecarbon','pandas','boto3','google.cloud.storage',"
        "'kfp','airflow','matplotlib','pyarrow') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
