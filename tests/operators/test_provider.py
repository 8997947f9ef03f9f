"""The provider's registration, its public names, and what importing it costs a DAG file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import carbonpipe.operators
from carbonpipe.operators import get_provider_info

HEAVY = ("codecarbon", "pandas", "boto3", "botocore", "google.cloud.storage")


def test_provider_is_registered_with_its_task_decorator() -> None:
    from airflow.providers_manager import ProvidersManager

    provider = ProvidersManager().providers["carbonpipe"]
    assert provider.version == carbonpipe.__version__
    assert provider.data["name"] == "Carbonpipe"
    assert provider.data["task-decorators"] == [
        {
            "name": "carbon_tracked",
            "class-name": "carbonpipe.operators.decorators.carbon_tracked_task",
        }
    ]


def test_task_carbon_tracked_resolves_to_our_decorator() -> None:
    from airflow.sdk import task

    from carbonpipe.operators.decorators import carbon_tracked_task

    assert task.carbon_tracked is carbon_tracked_task


def test_provider_info_has_the_fields_airflow_requires() -> None:
    info = get_provider_info()
    assert info["package-name"] == "carbonpipe"
    assert info["versions"] == [carbonpipe.__version__]
    assert {"name", "description"} <= set(info)
    json.dumps(info)  # what ``airflow providers get`` prints


def test_public_names_resolve_and_all_is_sorted() -> None:
    assert carbonpipe.operators.__all__ == sorted(carbonpipe.operators.__all__)
    for name in carbonpipe.operators.__all__:
        assert getattr(carbonpipe.operators, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        carbonpipe.operators.Nope  # noqa: B018


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("import carbonpipe.operators", id="package"),
        pytest.param(
            "import airflow.sdk\n"
            "from carbonpipe.operators import CarbonTrackedOperator, CarbonBudgetGateOperator, "
            "CarbonBudgetSensor, CarbonBudgetTrigger, CarbonStoreHook, carbon_tracked_task\n"
            "from carbonpipe.pipelines.airflow_dags import gated_training_dag, nightly_esg_dag\n"
            "gated_training_dag(); nightly_esg_dag()",
            id="classes-and-dag-factories",
        ),
    ],
)
def test_importing_the_provider_loads_no_heavy_library(statement: str) -> None:
    code = f"import sys\n{statement}\nprint('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    (heavy,) = [line for line in out.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy == "HEAVY=", out.stdout


def test_importing_the_package_does_not_import_airflow() -> None:
    # Airflow reads get_provider_info() while it initialises: importing airflow there would loop.
    code = "import sys, carbonpipe.operators\nprint('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
