"""Airflow DAG factories: the nightly ESG report, and an example training task gated by a budget.

Call a factory from a file in your DAGS_FOLDER (``pipelines/example_dags/`` has two)::

    from carbonpipe.pipelines.airflow_dags import nightly_esg_dag

    dag = nightly_esg_dag(store="s3://acme-carbon/prod")

Building a DAG does no I/O: the store is opened, and the period computed, when a task runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow DAGs"):
    from airflow.sdk import DAG, task

from carbonpipe.operators.gate import CarbonBudgetGateOperator
from carbonpipe.operators.tracked import XCOM_KEY, CarbonTrackedOperator

log = logging.getLogger(__name__)

DEFAULT_START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)


#: The nightly job's default schedule: after 01:00 UTC, when the day that just ended is closed
#: for budget rollups (:mod:`carbonpipe.budgets.rollup`), so the job rolls it up.
NIGHTLY_SCHEDULE = "15 1 * * *"


def month_of(context: Mapping[str, Any]) -> str:
    """The month (``YYYY-MM``, UTC) a nightly run reports on: its data interval's start's.

    A daily run covers the day that just ended, so the run just after midnight on the 1st
    writes the final report of the month before. A run without a data interval (a manual run
    with no logical date) reports on the day that just ended, as the KFP pipeline does.
    """
    when = context.get("data_interval_start") or context.get("logical_date")
    if when is None:
        from carbonpipe.integrations.kfp.esg import nightly_period

        return nightly_period()
    return f"{when.astimezone(timezone.utc):%Y-%m}"


def nightly_esg_dag(
    dag_id: str = "carbonpipe_nightly_esg",
    *,
    schedule: Any = NIGHTLY_SCHEDULE,
    store: str | None = None,
    period: str | None = None,
    out_dir: str | None = None,
    start_date: datetime | None = None,
    sweep_from: Sequence[str] = (),
    **dag_kwargs: Any,
) -> DAG:
    """Return a DAG that writes the ESG report of a period every night.

    :param dag_id: the DAG's id.
    :param schedule: when it runs (default ``15 1 * * *``: daily at 01:15 UTC, once the day
        that just ended is closed for budgets, an hour after midnight; at ``@daily``'s 00:00 the
        first gate of the day would have to roll that whole day up itself).
    :param store: the store URI (default: ``CARBONPIPE_STORE`` / carbon.yaml, read when the
        task runs).
    :param period: the period to report: ``2026-11``, ``2026-Q4``, ``2026`` (templated; default:
        the month of the run's data interval, see :func:`month_of`).
    :param out_dir: a local folder to also write the artifacts to.
    :param start_date: the DAG's start date (default 2026-01-01 UTC; no catch-up).
    :param sweep_from: record copies to sweep into the store first: KFP pipeline roots, or
        ``airflow:`` (the ``carbon_record`` XComs; needs Airflow's metadata database, which
        Airflow 3 does not give tasks: run ``carbonpipe flush --from airflow:`` where the
        scheduler runs instead).
    :param dag_kwargs: any other ``DAG`` argument (tags, default_args, ...).
    """
    dag_kwargs.setdefault("catchup", False)
    dag_kwargs.setdefault("tags", ["carbonpipe", "esg"])
    dag_kwargs.setdefault(
        "doc_md", "Nightly carbon ESG report: totals, CSV, HTML and charts in the store."
    )
    with DAG(
        dag_id, schedule=schedule, start_date=start_date or DEFAULT_START_DATE, **dag_kwargs
    ) as dag:

        @task(task_id="esg_report")
        def esg_report(
            store: str | None,
            period: str | None,
            out_dir: str | None,
            sweep_from: list[str],
            **context: Any,
        ) -> Any:
            from carbonpipe.config import resolve_settings
            from carbonpipe.esg.nightly import run_nightly

            store_uri = store or resolve_settings().store
            period = period or month_of(context)
            log.info("carbonpipe: ESG report of %s from %s", period, store_uri)
            return run_nightly(store_uri, period, out_dir=out_dir, sweep_from=sweep_from)

        esg_report(store, period, out_dir, list(sweep_from))
    return dag


def train_model(n: int = 2000, seed: int = 7) -> dict[str, float]:
    """A small, dependency-free "training": fit y = a*x + b by least squares on synthetic data."""
    import random

    rng = random.Random(seed)
    xs = [rng.uniform(0, 10) for _ in range(n)]
    ys = [3.0 * x + 2.0 + rng.gauss(0, 1) for x in xs]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = cov / var
    return {"slope": slope, "intercept": mean_y - slope * mean_x, "n": float(n)}


def gated_training_dag(
    dag_id: str = "carbonpipe_gated_training",
    *,
    store: str | None = None,
    limit_kg_co2e: float = 1.0,
    period: str = "month",
    on_exceed: str = "skip",
    estimate_kg: float | None = None,
    default_step_estimate_kg: float = 0.001,
    n_samples: int = 2000,
    cloud_provider: str | None = "gcp",
    cloud_region: str | None = "europe-west1",
    schedule: Any = None,
    start_date: datetime | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """Return an example DAG: a budget gate, a carbon-tracked training task, a report task.

    The gate skips (or fails) the training when its estimate would overrun the pipeline's
    budget; the training task reserves its estimate when it starts and is charged what it spent;
    the report task reads the ``carbon_metrics`` XCom.

    :param dag_id: the DAG's id; the budget's scope is ``pipeline:<dag_id>``.
    :param store: the store URI (default: the carbonpipe configuration).
    :param limit_kg_co2e: the budget's limit per period.
    :param period: ``month``, ``quarter``, ``year`` or ``total``.
    :param on_exceed: ``skip`` or ``fail``.
    :param estimate_kg: the training's estimate for the gate (default: its history).
    :param default_step_estimate_kg: the estimate when the training has no history yet.
    :param n_samples: the training's data size.
    :param cloud_provider: where the training runs (the example names its location).
    :param cloud_region: the provider's region.
    :param schedule: when it runs (default: manual).
    :param start_date: the DAG's start date.
    :param dag_kwargs: any other ``DAG`` argument.
    """
    from carbonpipe.budgets.budget import Budget

    budget = Budget(
        scope=f"pipeline:{dag_id}",
        period=period,
        limit_kg_co2e=limit_kg_co2e,
        on_exceed=on_exceed,
        default_step_estimate_kg=default_step_estimate_kg,
    )
    dag_kwargs.setdefault("catchup", False)
    dag_kwargs.setdefault("tags", ["carbonpipe", "example"])
    with DAG(
        dag_id, schedule=schedule, start_date=start_date or DEFAULT_START_DATE, **dag_kwargs
    ) as dag:
        gate = CarbonBudgetGateOperator(
            task_id="budget_gate", budget=budget, step="train", estimate_kg=estimate_kg, store=store
        )
        train = CarbonTrackedOperator(
            task_id="train",
            python_callable=train_model,
            op_kwargs={"n": n_samples},
            budget=budget,
            store=store,
            cloud_provider=cloud_provider,
            cloud_region=cloud_region,
            labels={"model": "linear"},
        )

        @task(task_id="report")
        def report(model: Any, **context: Any) -> dict[str, Any]:  # model: an XComArg until run
            metrics = context["ti"].xcom_pull(task_ids="train", key=XCOM_KEY)
            log.info("carbonpipe: trained %s for %s", model, metrics)
            return {"model": model, "carbon": metrics}

        gate >> train
        report(train.output)
    return dag
