"""``esg_aggregate``: the nightly ESG report of a store, as KFP artifacts.

Interface only; the implementation is :func:`carbonpipe.integrations.kfp.esg.run_esg_aggregate`, which
calls :func:`carbonpipe.esg.nightly.run_nightly` (the same function the Airflow DAG runs).
"""

from typing import Any

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from ._image import component_image


def esg_aggregate(
    totals: Output[Metrics],
    report: Output[HTML],
    summary: Output[Artifact],
    store: str = "",
    period: str = "",
    sweep_from: str = "",
) -> None:
    """Aggregate a period's carbon records into the ESG report (JSON, CSV, HTML, charts).

    The report is written to the store under esg/<period>/ and published here as artifacts.

    Args:
        store: Store holding the records: a folder, s3://bucket/prefix or gs://bucket/prefix. Empty: CARBONPIPE_STORE.
        period: Period to report, e.g. 2026-11. Empty: the month of the day that just ended (UTC).
        sweep_from: A pipeline root to sweep first for the carbon_record artifacts of steps whose store was down (each delivered once). Empty: none.

    Returns:
        totals: The period's totals for the KFP UI (energy, emissions, records, ...).
        report: The HTML report, with its charts.
        summary: JSON summary: the report's URIs in the store and the totals.
    """
    from carbonpipe.integrations.kfp.esg import run_esg_aggregate

    run_esg_aggregate(
        store=store,
        period=period,
        metrics=totals,
        report_html_path=report.path,
        report_json_path=summary.path,
        sweep_from=sweep_from,
    )


_interface = esg_aggregate


def build(image: str | None = None) -> Any:
    """Return the ``esg_aggregate`` component running in ``image`` (default: ours)."""
    return dsl.component(
        _interface, base_image=image or component_image(), install_kfp_package=False
    )


esg_aggregate = build()  # noqa: F811 - the component replaces its interface function
