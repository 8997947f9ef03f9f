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

PIPELINE_NAME = "nightly-esg"
DEFAULT_STORE = "./carbon-artifacts"

__all__ = ["PIPELINE_NAME", "build_pipeline", "main", "nightly_esg_dag", "nightly_esg_pipeline"]

#: The KFP pipeline, built on first access (see ``__getattr__``).
nightly_esg_pipeline: Any


def build_pipeline() -> Any:
    """Define the pipeline (imports kfp)."""
    from kfp import dsl

    from carbonpipe.components import esg_aggregate

    @dsl.pipeline(
        name=PIPELINE_NAME, description="Aggregate the carbon records into the ESG report."
    )
    def nightly_esg_pipeline(store: str = DEFAULT_STORE, period: str = "") -> None:
        """Write the period's ESG report (JSON, CSV, HTML, charts) to the store.

        Args:
            store: Store holding the records: a folder, s3://bucket/prefix or gs://bucket/prefix.
            period: Period to report, e.g. 2026-11. Empty: the month of the day that just ended (UTC).
        """
        esg_aggregate(store=store, period=period).set_caching_options(False)

    return nightly_esg_pipeline


def nightly_esg_dag(*args: Any, **kwargs: Any) -> Any:
    """Return the Airflow DAG of the nightly ESG report; see
    :func:`carbonpipe.pipelines.airflow_dags.nightly_esg_dag` for the arguments."""
    from carbonpipe.pipelines.airflow_dags import nightly_esg_dag as factory

    return factory(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "nightly_esg_pipeline":
        value = build_pipeline()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``--compile OUT.yaml`` and/or ``--run-local``; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m carbonpipe.pipelines.nightly_esg",
        description="The nightly ESG aggregation.",
    )
    parser.add_argument("--compile", metavar="OUT.yaml", help="write the compiled pipeline here")
    parser.add_argument("--run-local", action="store_true", help="run it here with kfp.local")
    parser.add_argument(
        "--pipeline-root", default="./local_outputs", help="kfp.local's output folder"
    )
    parser.add_argument("--store", default=DEFAULT_STORE, help="store holding the records")
    parser.add_argument("--period", default="", help="e.g. 2026-11 (default: yesterday's month)")
    args = parser.parse_args(argv)
    if not (args.compile or args.run_local):
        parser.error("give --compile OUT.yaml and/or --run-local")
    from carbonpipe.components import compile_pipeline, run_local

    pipeline = build_pipeline()
    if args.compile:
        print(compile_pipeline(pipeline, args.compile))
    if args.run_local:
        run_local(pipeline, pipeline_root=args.pipeline_root, store=args.store, period=args.period)
        print(f"nightly-esg: report written under {args.store}/esg/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
