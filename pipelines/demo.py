"""The main job end to end on the embedded defaults: ``make demo`` runs this.

1. Kubeflow: the carbon-gated training pipeline under KFP's local runner, twice: once within
   its budget (it trains), once with the budget spent (the gate skips training).
2. Airflow: the gated training DAG with ``dag.test()`` on a SQLite metadata DB.
3. ESG: the nightly aggregation over this month, writing report.json/csv/html and charts.

Everything goes to a local folder store (``./carbon-artifacts`` by default). The demo names its
location (gcp/europe-west1) and turns metadata probing off: it sends no packet anywhere. The
terminal shows the summary, each gate's decision with its figures, and where the runners' own
logs went (``<store>/.demo/demo.log``; ``--verbose`` shows them instead).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from carbonpipe._optional import needs_extra


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


@contextlib.contextmanager
def logs_to(path: Path | None) -> Iterator[None]:
    """Send everything written to stdout and stderr (this process's and its subprocesses') to
    ``path``, appended; ``None``: leave the terminal alone."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def gate_line(who: str, decision: dict[str, Any], verdict: object, step: object) -> str:
    """One line for a gate's decision: what it decided and the figures (a ``GateDecision``'s
    fields) it decided on."""
    from carbonpipe.impact import format_mass

    def kg(name: str) -> str:
        value = decision.get(name)
        return "?" if not isinstance(value, (int, float)) else format_mass(max(float(value), 0.0))

    return (
        f"{who}: gate decided {verdict!r} for {step}: used {kg('used_kg')} + reserved "
        f"{kg('reserved_kg')} + estimate {kg('estimate_kg')} vs limit {kg('limit_kg')} CO2e"
    )


def run_kfp(store: Path, work: Path, log: Path | None = None) -> list[str]:
    """Run the gated training pipeline locally, within budget and then over it; return a line
    per gate decision, with its figures."""
    from carbonpipe.components import run_local
    from carbonpipe.pipelines.gated_training import build_pipeline

    root = work / "kfp-outputs"
    decisions = []
    for label, limit_kg in (("within budget", 1.0), ("budget spent", 1e-9)):
        before = set(root.iterdir()) if root.exists() else set()
        with logs_to(log):
            pipeline = build_pipeline()
            run_local(pipeline, pipeline_root=root, store=str(store), budget_limit_kg=limit_kg)
        runs = sorted(set(root.iterdir()) - before)
        reports = [r / "budget-gate" / "report" for r in runs]
        found = [json.loads(r.read_text()) for r in reports if r.exists()]
        decisions += [
            gate_line(
                f"KFP gated training ({label})",
                report.get("gate") or {},
                report.get("decision"),
                report.get("step"),
            )
            for report in found
        ]
    return decisions


def run_airflow(work: Path) -> list[str]:
    """Run the example gated training DAG with ``dag.test()``; return its task states and its
    gate's decision."""
    import importlib.util

    with needs_extra("airflow", "the demo"):
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
    lines = [f"Airflow DAG {module.dag.dag_id}: {states}"]
    decision = _airflow_gate_decision(module.dag.dag_id, "budget_gate")
    if decision is not None:
        who = f"Airflow {module.dag.dag_id}"
        lines.append(gate_line(who, decision, decision.get("action"), "train"))
    return lines


def _airflow_gate_decision(dag_id: str, task_id: str) -> dict[str, Any] | None:
    """The decision an Airflow budget gate returned (its XCom), or ``None`` (it skipped)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag_id, XComModel.task_id == task_id)
            .filter(XComModel.key == "return_value")
            .first()
        )
        value = None if row is None else row.value
    return value if isinstance(value, dict) else None


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
    parser.add_argument(
        "--verbose", action="store_true", help="show the runners' logs here, not in a file"
    )
    args = parser.parse_args(argv)
    store = Path(args.store).resolve()
    work = store / ".demo"
    _environment(store, work)
    log = None if args.verbose else work / "demo.log"
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        print(f"carbonpipe demo: running KFP, Airflow and ESG; their logs go to {log}", flush=True)

    lines = []
    if not args.skip_kfp:
        lines += run_kfp(store, work, log)
    with logs_to(log):
        if not args.skip_airflow:
            lines += run_airflow(work)
        esg = run_esg(store, work)

    from carbonpipe.impact import format_energy, format_mass
    from carbonpipe.report import summarize
    from carbonpipe.stores.opener import open_store

    summary = summarize(open_store(str(store)))
    print("\n== carbonpipe demo ==")
    for line in lines:
        print(line)
    print(
        f"records:   {summary.records} in {store}/records "
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
    if log is not None:
        print(f"logs:      {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
