"""``tracked_command``: run any command in carbonpipe's image as a tracked step.

A container component: the container runs ``python -m carbonpipe.integrations.kfp.command command``, which
runs the command under ``carbonpipe run`` (signals forwarded, its exit code kept, exit 3 when a
``fail`` budget refuses it) and hands the step's figures to KFP as the ``metrics`` output. KFP
renders a list input as one JSON string, hence ``--command-json``.
"""

from typing import Any, List  # noqa: UP035 - KFP's container-component interface wants typing.List

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from ._identity import PIPELINE_NAME, RUN_ID, TASK_NAME, with_identity
from ._image import component_image


def build(image: str | None = None) -> Any:
    """Return the ``tracked_command`` component running in ``image`` (default: ours)."""
    resolved_image = image or component_image()

    def tracked_command(
        command: List[str],  # noqa: UP006
        metrics: Output[Metrics],
        record: Output[Artifact],
        step: str = "",
        project: str = "",
        store: str = "",
        pipeline: str = "",
        run_id: str = "",
        team: str = "",
        cloud_provider: str = "",
        cloud_region: str = "",
        country_iso_code: str = "",
        tracking_mode: str = "",
        budget_scope: str = "",
        budget_kg_co2e: float = 0.0,
        budget_period: str = "month",
        on_exceed: str = "fail",
        budget_estimate_kg_co2e: float = -1.0,
        budget_when_unavailable: str = "refuse",
    ) -> dsl.ContainerSpec:
        """Run a command as a tracked carbonpipe step and publish its carbon footprint.

        The task fails with the command's exit code, or with 3 when the budget (on_exceed fail) refuses the step before it starts, or with 2 when that budget cannot estimate a step with no history (give budget_estimate_kg_co2e).

        Args:
            command: The program and its arguments, e.g. ["python", "train.py", "--epochs", "3"].
            step: Step name of the record. Filled with KFP's task name.
            project: Project the record belongs to. Empty: CARBONPIPE_PROJECT.
            store: Where the record goes: a folder, s3://bucket/prefix or gs://bucket/prefix. Empty: CARBONPIPE_STORE.
            pipeline: Pipeline the record belongs to. Filled with the enclosing pipeline's name.
            run_id: Run id grouping the records of one run. Filled with KFP's job id.
            team: Team the record belongs to, for team:NAME budgets.
            cloud_provider: gcp, aws or azure. Empty: detected.
            cloud_region: The provider's region, e.g. europe-west1. Empty: detected.
            country_iso_code: ISO country code when off-cloud, e.g. FR.
            tracking_mode: machine, process or offline. Empty: CARBONPIPE_TRACKING_MODE.
            budget_scope: Budget gating the step, pipeline:NAME or team:NAME. Empty: no budget.
            budget_kg_co2e: That budget's limit in kg CO2e for its period.
            budget_period: That budget's period, month, quarter, year or total.
            on_exceed: fail (the task fails, exit 3) or skip (the command is not run, the task succeeds).
            budget_estimate_kg_co2e: kg CO2e the budget reserves for a step with no baseline and no earlier run; negative: none (an on_exceed fail budget then refuses such a step, exit 2).
            budget_when_unavailable: When the budget ledger cannot be read: refuse (as on_exceed says) or run (ungated, noted in the record).

        Returns:
            metrics: The step's figures: energy_kwh, emissions_g_co2e, emissions_kg_co2e, intensity_g_per_kwh, duration_s, budget_percent.
            record: The step's full carbonpipe record (JSON), a copy KFP keeps in the pipeline root for when the store was down and the pod's spool went with the pod: `carbonpipe flush --from <pipeline root>` delivers it once.
        """
        return dsl.ContainerSpec(
            image=resolved_image,
            command=["python", "-m", "carbonpipe.integrations.kfp.command", "command"],
            args=[
                "--executor-input",
                dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
                "--metrics-output",
                "metrics",
                "--metrics-path",
                metrics.path,
                "--record-path",
                record.path,
                "--command-json",
                command,
                "--",
                f"--step={step}",
                f"--project={project}",
                f"--store={store}",
                f"--pipeline={pipeline}",
                f"--run-id={run_id}",
                f"--team={team}",
                f"--provider={cloud_provider}",
                f"--region={cloud_region}",
                f"--country={country_iso_code}",
                f"--tracking-mode={tracking_mode}",
                f"--budget-scope={budget_scope}",
                f"--budget-kg={budget_kg_co2e}",
                f"--budget-period={budget_period}",
                f"--on-exceed={on_exceed}",
                f"--budget-estimate-kg={budget_estimate_kg_co2e}",
                f"--budget-when-unavailable={budget_when_unavailable}",
            ],
        )

    component = dsl.container_component(tracked_command)
    return with_identity(
        component, {"pipeline": PIPELINE_NAME, "run_id": RUN_ID, "step": TASK_NAME}
    )


tracked_command = build()
