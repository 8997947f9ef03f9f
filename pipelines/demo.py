"""The main job end to end on the embedded defaults: ``make demo`` runs this.

1. Kubeflow: the carbon-gated training pipeline under KFP's local runner, twice: once within
   its budget (it trains), once with the budget spent (the gate skips training).
2. Airflow: the gated training DAG with ``dag.test()`` on a SQLite metadata DB.
3. ESG: the nightly aggregation over this month, writing report.json/csv/html and charts.

Everything goes to a local folder store (``./carbon-artifacts`` by default). The demo names its
location (gcp/europe-west1) and turns metadata probing off: it sends no packet anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path


def _environment(store: Path, work: Path) -> None:
    os.environ["CARBONPIPE_STORE"] = str(store)
    os.environ["CARBONPIPE_CLOUD_DETECTION"] = "off"
    os.environ.setdefault("CARBONPIPE_CLOUD_PROVIDER", "gcp")
    os.environ.setdefault("CARBONPIPE_CLOUD_REGION", "europe-west1")
    airflow_home = work / "airflow"
    (airflow_home / "dags").mkdir(parents=True, exist_ok=True)
    # Airflow reads these when first imported, so they are set before anything imports it.
    os.environ.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(airflow_home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )


def run_kfp(store: Path, work: Path) -> list[str]:
    """Run the gated training pipeline locally, within budget and then over it."""
    from carbonpipe.components import run_local
    from carbonpipe.pipelines.gated_training import build_pipeline

    pipeline = build_pipeline()
    decisions = []
    for label, limit_kg in (("within budget", 1.0), ("budget spent", 1e-9)):
        task = run_local(
            pipeline,
            pipeline_root=work / "kfp-outputs",
            store=str(store),
            budget_limit_kg=limit_kg,
        )
        decisions.append(f"KFP gated training ({label}): gate decided {task.output!r}")
    return decisions


def run_airflow(work: Path) -> str:
    """Run the example gated training DAG with ``dag.test()``."""
    import importlib.util

    from airflow.utils.db import resetdb

    resetdb()
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "carbonpipe_demo_training.py"
    dag_file.write_text(
        textwrap.dedent(
            """
            from carbonpipe.pipelines.airflow_dags import gated_training_dag

            dag = gated_training_dag(dag_id="carbonpipe_demo_training", limit_kg_co2e=1.0)
            """
        )
    )
    spec = importlib.util.spec_from_file_location("carbonpipe_demo_dag", dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.dag.test()
    states = {
        ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()
    }
    return f"Airflow DAG {module.dag.dag_id}: {states}"


def run_esg(store: Path, work: Path) -> dict[str, object]:
    """Aggregate this month's records into the ESG artifacts."""
    from carbonpipe.esg.nightly import run_nightly

    period = datetime.now(timezone.utc).strftime("%Y-%m")
    return run_nightly(str(store), period, out_dir=str(work / "esg"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and print where the records and artifacts went."""
    parser = argparse.ArgumentParser(
        prog="python -m carbonpipe.pipelines.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--store", default="./carbon-artifacts", help="the local folder store")
    parser.add_argument("--skip-airflow", action="store_true")
    parser.add_argument("--skip-kfp", action="store_true")
    args = parser.parse_args(argv)
    store = Path(args.store).resolve()
    work = store / ".demo"
    _environment(store, work)

    lines = []
    if not args.skip_kfp:
        lines += run_kfp(store, work)
    if not args.skip_airflow:
        lines.append(run_airflow(work))
    esg = run_esg(store, work)

    from carbonpipe.impact import format_energy, format_mass
    from carbonpipe.report import summarize
    from carbonpipe.stores.opener import open_store

    summary = summarize(open_store(str(store)))
    print("\n== carbonpipe demo ==")
    for line in lines:
        print(line)
    print(
        f"records:   {summary.records} in {store}/records/v1 "
        f"({format_energy(summary.energy_kwh)}, {format_mass(summary.emissions_kg_co2e)} CO2e)"
    )
    for name, p in sorted(summary.by_pipeline.items()):
        print(f"  pipeline {name}: {int(p['records'])} records")
    print(f"budgets:   {store}/budgets")
    artifacts = esg.get("artifacts", {})
    if isinstance(artifacts, dict):
        for name, where in sorted(artifacts.items()):
            print(f"esg {name}: {where}")
    print(f"KFP outputs: {work / 'kfp-outputs'}   Airflow home: {work / 'airflow'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
