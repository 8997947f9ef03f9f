"""``budget_gate``: does the next step fit its carbon budget? An answer ``dsl.If`` can branch on.

The answer is the component's single return value (``Output``, aliased ``decision``): a
``NamedTuple`` field is lost by KFP 2.17's local runner in a ``dsl.If`` without ``dsl.Else``
(``Could not resolve parent input``: the gated step silently never ran), a plain return is not.

Interface only (signature and docstring, which KFP reads into the spec); the implementation is
:func:`carbonpipe.integrations.kfp.gate.run_budget_gate`. The gate reserves nothing: the gated step's
own tracker reserves its estimate when it starts and charges its record when it ends.
"""

from typing import Any

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from ._identity import PIPELINE_NAME, RUN_ID, RUN_NAME, with_identity
from ._image import component_image


def budget_gate(
    scope: str,
    limit_kg_co2e: float,
    status: Output[Metrics],
    report: Output[Artifact],
    period: str = "month",
    step: str = "",
    estimate_kg_co2e: float = -1.0,
    default_step_estimate_kg: float = 0.0,
    warn_ratio: float = 0.8,
    strict: bool = False,
    when_unavailable: str = "refuse",
    store: str = "",
    pipeline: str = "",
    run_id: str = "{{$.pipeline_job_uuid}}",
    run_name: str = "{{$.pipeline_job_name}}",
) -> str:
    """Decide whether the next step fits its carbon budget, and report where the budget stands.

    Branch on it with ``dsl.If(gate.outputs["decision"] == "run")`` (``gate.outputs["Output"]``
    when loaded from its YAML), with or without ``dsl.Else()``.

    Args:
        scope: Budget scope, pipeline:NAME or team:NAME.
        limit_kg_co2e: Budget limit for the period, in kg CO2e.
        period: Budget period, month, quarter, year or total (UTC).
        step: Name of the step the gate guards, whose baseline or last run is its estimate.
        estimate_kg_co2e: The step's expected emissions in kg CO2e; negative: its baseline, else its last run, else default_step_estimate_kg.
        default_step_estimate_kg: Estimate for a step with neither baseline nor previous run.
        warn_ratio: Share of the limit (0-1] past which the budget warns.
        strict: Fail the run when the step does not fit, instead of answering skip.
        when_unavailable: When the budget ledger cannot be read within 5 s, refuse (skip, or fail when strict) or run (answer run, noted in the report).
        store: Store holding the budget ledger: a folder, s3://bucket/prefix or gs://bucket/prefix. Empty: CARBONPIPE_STORE.
        pipeline: Pipeline the guarded step belongs to. Filled with the enclosing pipeline's name; empty: the budget's pipeline (scope pipeline:NAME).
        run_id: Run the decision belongs to, for the report. Defaults to KFP's job id.
        run_name: KFP's run name, for the report. Defaults to KFP's job name.

    Returns:
        status: Budget status for the KFP UI: fits (1 or 0), ledger_unavailable (1 or 0), budget_percent, used_kg_co2e, reserved_kg_co2e, remaining_kg_co2e, limit_kg_co2e, estimate_kg_co2e, burn_rate_kg_per_day, days_left.
        report: JSON report: the decision, its message, the gate's figures and the budget status.
        Output: The decision: run when the step fits, skip when it does not (strict mode fails instead).
    """
    from carbonpipe.integrations.kfp.gate import run_budget_gate

    outcome = run_budget_gate(
        scope=scope,
        limit_kg_co2e=limit_kg_co2e,
        period=period,
        step=step,
        estimate_kg_co2e=estimate_kg_co2e,
        default_step_estimate_kg=default_step_estimate_kg,
        warn_ratio=warn_ratio,
        strict=strict,
        when_unavailable=when_unavailable,
        store=store,
        pipeline=pipeline,
        run_id=run_id,
        run_name=run_name,
        metrics=status,
        report_path=report.path,
    )
    report.metadata["decision"] = outcome.decision
    report.metadata["fits"] = outcome.fits
    return outcome.decision


_interface = budget_gate


def build(image: str | None = None) -> Any:
    """Return the ``budget_gate`` component running in ``image`` (default: ours)."""
    component = dsl.component(
        _interface, base_image=image or component_image(), install_kfp_package=False
    )
    return with_identity(
        component,
        {"pipeline": PIPELINE_NAME, "run_id": RUN_ID, "run_name": RUN_NAME},
        aliases={"decision": "Output"},
    )


budget_gate = build()  # noqa: F811 - the component replaces its interface function
