"""The nightly ESG aggregation, for Kubeflow Pipelines and, through the same core, Airflow.

``nightly_esg_pipeline`` runs the ``esg_aggregate`` component (schedule it as a recurring run);
``nightly_esg_dag`` returns the Airflow DAG doing the same. Importing this module imports
neither kfp nor airflow: the pipeline is built on first access, the DAG when called.

    python -m carbonpipe.pipelines.nightly_esg --compile nightly_esg.yaml
    python -m carbonpipe.pipelines.nightly_esg --run-local --store ./carbon-artifacts
"""

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from carbonpipe._optional import needs_extra
from carbonpipe.pipelines._cli import DEFAULT_STORE, compile_or_run, lazy_pipeline, pipeline_parser

PIPELINE_NAME = "nightly-esg"

__all__ = ["PIPELINE_NAME", "build_pipeline", "main", "nightly_esg_dag", "nightly_esg_pipeline"]

#: The KFP pipeline, built on first access (see ``__getattr__``).
nightly_esg_pipeline: Any


def build_pipeline() -> Any:
    """Define the pipeline (imports kfp)."""
    with needs_extra("kfp", "KFP pipelines"):
        from kfp import dsl

    from carbonpipe.components import esg_aggregate

    @dsl.pipeline(
        name=PIPELINE_NAME, description="Aggregate the carbon records into the ESG report."
    )
    def nightly_esg_pipeline(
        store: str = DEFAULT_STORE, period: str = "", sweep_from: str = ""
    ) -> None:
        """Write the period's ESG report (JSON, CSV, HTML, charts) to the store.

        Args:
            store: Store holding the records: a folder, s3://bucket/prefix or gs://bucket/prefix.
            period: Period to report, e.g. 2026-11. Empty: the month of the day that just ended (UTC).
            sweep_from: The pipeline root of the runs to report, swept first for the records of steps whose store was down. Empty: none.
        """
        esg_aggregate(store=store, period=period, sweep_from=sweep_from).set_caching_options(False)

    return nightly_esg_pipeline


def nightly_esg_dag(*args: Any, **kwargs: Any) -> Any:
    """Return the Airflow DAG of the nightly ESG report; see
    :func:`carbonpipe.pipelines.airflow_dags.nightly_esg_dag` for the arguments."""
    from carbonpipe.pipelines.airflow_dags import nightly_esg_dag as factory

    return factory(*args, **kwargs)


__getattr__ = lazy_pipeline(__name__, "nightly_esg_pipeline", build_pipeline)


def _run(pipeline: Any, args: argparse.Namespace) -> str:
    from carbonpipe.components import run_local

    run_local(pipeline, pipeline_root=args.pipeline_root, store=args.store, period=args.period)
    return f"nightly-esg: report written under {args.store}/esg/"


def main(argv: Sequence[str] | None = None) -> int:
    """``--compile OUT.yaml`` and/or ``--run-local``; see the module docstring."""
    parser = pipeline_parser(
        "python -m carbonpipe.pipelines.nightly_esg",
        "The nightly ESG aggregation.",
        store_help="store holding the records",
    )
    parser.add_argument("--period", default="", help="e.g. 2026-11 (default: yesterday's month)")
    return compile_or_run(parser, argv, build_pipeline, _run)


if __name__ == "__main__":
    sys.exit(main())
