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


# -- every public name survives the reshaping into concept packages --------------------------
# (name, attribute path) pairs that users and the README rely on; each must resolve.
PROMISED = [
    "carbonpipe.CarbonTracker",
    "carbonpipe.CarbonMetrics",
    "carbonpipe.carbon_tracked",
    "carbonpipe.detect_location",
    "carbonpipe.CarbonpipeError",
    "carbonpipe.open_store",
    "carbonpipe.Budget",
    "carbonpipe.BudgetLedger",
    "carbonpipe.BudgetExceeded",
    "carbonpipe.CodeCarbonMetrics",
    "carbonpipe.extract_carbon_metrics",
    "carbonpipe.trace.CarbonTraceMiddleware",
    "carbonpipe.trace.attribute",
    "carbonpipe.trace.httpx_hooks",
    "carbonpipe.trace.requests_hook",
    "carbonpipe.esg.aggregate",
    "carbonpipe.esg.write_report",
    "carbonpipe.optuna.CarbonTrialTracker",
    "carbonpipe.optuna.CarbonBudgetPruner",
    "carbonpipe.components.carbon_component",
    "carbonpipe.components.tracked_command",
    "carbonpipe.components.budget_gate",
    "carbonpipe.components.esg_aggregate",
    "carbonpipe.components.load_component",
    "carbonpipe.operators.CarbonTrackedOperator",
    "carbonpipe.operators.CarbonBudgetGateOperator",
    "carbonpipe.operators.CarbonBudgetSensor",
    "carbonpipe.operators.CarbonBudgetTrigger",
    "carbonpipe.operators.CarbonShiftOperator",
    "carbonpipe.operators.CarbonShiftTrigger",
    "carbonpipe.components.wait_for_clean_grid",
    "carbonpipe.intensity.planner.plan_start",
    "carbonpipe.pipelines.airflow_dags.nightly_esg_dag",
    "carbonpipe.pipelines.airflow_dags.gated_training_dag",
    "carbonpipe.cli.main",
]
PACKAGES = [
    "carbonpipe.budgets",
    "carbonpipe.cli",
    "carbonpipe.esg",
    "carbonpipe.integrations.kfp",
    "carbonpipe.intensity",
    "carbonpipe.location",
    "carbonpipe.measure",
    "carbonpipe.stores",
    "carbonpipe.trace",
]


def _resolve(path: str) -> object:
    import importlib

    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def test_every_promised_public_name_still_resolves() -> None:
    missing = []
    for path in PROMISED:
        try:
            value = _resolve(path)
        except (AttributeError, ModuleNotFoundError) as exc:
            missing.append(f"{path}: {exc}")
            continue
        assert not isinstance(value, type(sys)), f"{path} is a module, not the promised object"
    assert not missing, missing


def test_a_function_named_like_a_module_is_not_shadowed_once_its_package_is_loaded() -> None:
    # A submodule named after a public function would replace it on the package once imported.
    import carbonpipe.esg
    import carbonpipe.esg.aggregation  # noqa: F401
    import carbonpipe.trace
    import carbonpipe.trace.client  # noqa: F401

    assert callable(carbonpipe.esg.aggregate) and callable(carbonpipe.trace.attribute)


def test_each_concept_package_exports_what_its_modules_define() -> None:
    import importlib

    for name in PACKAGES:
        package = importlib.import_module(name)
        assert package.__doc__, f"{name} has no docstring"
        assert sorted(package.__all__) == package.__all__, name
        for public in package.__all__:
            assert getattr(package, public) is not None, f"{name}.{public}"


def test_the_concept_packages_import_nothing_until_a_name_is_used() -> None:
    code = (
        "import sys, json; before = set(sys.modules);"
        f"import {', '.join(PACKAGES)};"
        "print(json.dumps(sorted(m for m in set(sys.modules) - before"
        " if m not in " + repr(PACKAGES) + " and m not in ('carbonpipe', 'carbonpipe._lazy',"
        " 'carbonpipe.integrations'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
