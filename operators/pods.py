"""Work that runs outside the Airflow worker: pods, Spark, EMR, Databricks, managed training jobs.

``CarbonTrackedOperator(operator=...)`` measures the process it runs in. For an operator whose
work runs elsewhere that is the worker waiting on a pod or a job: a near-zero figure. This
module recognises those operators (by class name, through the class's MRO, so subclasses such
as ``GKEStartPodOperator`` count) and, for a ``KubernetesPodOperator`` whose image has
carbonpipe, rewrites its container command to ``carbonpipe run ... -- <command>`` with the
step's identity, store and location, so the pod measures itself and writes the step's one
record. A pod not wrapped, with Kepler configured, is charged the launched pod's own energy
(``carbonpipe.measure.kepler``; the wrapper names the pod). Any other remote operator is still
tracked, with ``measurement.scope: "worker"`` and a ``tracking_errors`` entry saying that the
remote work is not measured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

#: Operators whose work runs outside the worker, by class name: what runs the work.
REMOTE_OPERATORS: dict[str, str] = {
    "KubernetesPodOperator": "a Kubernetes pod",
    "SparkKubernetesOperator": "a Spark application on Kubernetes",
    "KubernetesJobOperator": "a Kubernetes job",
    "SparkSubmitOperator": "a Spark cluster (spark-submit)",
    "DataprocSubmitJobOperator": "a Dataproc job",
    "DataprocCreateBatchOperator": "a Dataproc batch",
    "EmrAddStepsOperator": "an EMR cluster",
    "EmrContainerOperator": "EMR on EKS",
    "EmrServerlessStartJobOperator": "EMR Serverless",
    "DatabricksSubmitRunOperator": "a Databricks job",
    "DatabricksRunNowOperator": "a Databricks job",
    "DatabricksNotebookOperator": "a Databricks job",
    "SageMakerTrainingOperator": "a SageMaker training job",
    "SageMakerProcessingOperator": "a SageMaker processing job",
    "SageMakerTransformOperator": "a SageMaker transform job",
    "SageMakerTuningOperator": "a SageMaker tuning job",
    "CreateCustomTrainingJobOperator": "a Vertex AI training job",
    "CreateCustomContainerTrainingJobOperator": "a Vertex AI training job",
    "CreateCustomPythonPackageTrainingJobOperator": "a Vertex AI training job",
    "RunPipelineJobOperator": "a Vertex AI pipeline",
    "AzureMachineLearningCreatePipelineRunOperator": "an Azure ML pipeline",
    "BatchOperator": "an AWS Batch job",
    "EcsRunTaskOperator": "an ECS task",
    "GlueJobOperator": "an AWS Glue job",
    "CloudRunExecuteJobOperator": "a Cloud Run job",
}

#: Image names (prefixes, comma-separated) whose pods have carbonpipe installed.
IMAGES_ENV = "CARBONPIPE_POD_IMAGES"


def remote_kind(operator: Any) -> str | None:
    """What runs ``operator``'s work when that is not the worker (None when it is)."""
    for cls in type(operator).__mro__:
        if cls.__name__ in REMOTE_OPERATORS:
            return REMOTE_OPERATORS[cls.__name__]
    return None


def is_pod_operator(operator: Any) -> bool:
    """Whether ``operator`` is a ``KubernetesPodOperator`` (or a subclass)."""
    return any(cls.__name__ == "KubernetesPodOperator" for cls in type(operator).__mro__)


def image_has_carbonpipe(image: str | None, images: Sequence[str] | None = None) -> bool:
    """Whether ``image`` starts with one of ``images`` (default: ``CARBONPIPE_POD_IMAGES``)."""
    if not image:
        return False
    if images is None:
        images = [i.strip() for i in os.environ.get(IMAGES_ENV, "").split(",") if i.strip()]
    return any(image.startswith(prefix) for prefix in images)


def wrap_wanted(pod_operator: Any, wrap: bool, images: Sequence[str] | None) -> bool:
    """Whether to wrap the pod's command: asked to, or its image is one with carbonpipe."""
    return wrap or image_has_carbonpipe(getattr(pod_operator, "image", None), images)


def not_measured(kind: str, why: str = "") -> str:
    """The ``tracking_errors`` entry of a step whose remote work was not measured."""
    note = f" ({why})" if why else ""
    return (
        f"remote work not measured: the step's work ran in {kind}; only the Airflow worker "
        f"that waited on it was measured (measurement.scope: worker){note}"
    )


def run_command(
    identity: Mapping[str, Any],
    *,
    store: str | None,
    location: Mapping[str, str | None],
    labels: Mapping[str, str],
) -> list[str]:
    """``carbonpipe run`` and its options, up to and including ``--``."""
    cmd = ["carbonpipe", "run"]
    for option in ("project", "experiment", "pipeline", "team", "run_id", "step", "attempt"):
        value = identity.get(option)
        if value is not None and value != "":
            cmd += [f"--{option.replace('_', '-')}", str(value)]
    if store:
        cmd += ["--store", store]
    for option in ("provider", "region", "country"):
        if location.get(option):
            cmd += [f"--{option}", str(location[option])]
    for key, value in sorted(labels.items()):
        cmd += ["--label", f"{key}={value}"]
    return [*cmd, "--"]


def run_env(identity: Mapping[str, Any], store: str | None) -> dict[str, str]:
    """The ``CARBONPIPE_*`` variables naming the step, for the pod's own carbonpipe calls."""
    names = {
        "project": "CARBONPIPE_PROJECT",
        "experiment": "CARBONPIPE_EXPERIMENT",
        "pipeline": "CARBONPIPE_PIPELINE",
        "team": "CARBONPIPE_TEAM",
        "run_id": "CARBONPIPE_RUN_ID",
    }
    env = {var: str(identity[k]) for k, var in names.items() if identity.get(k) not in (None, "")}
    if store:
        env["CARBONPIPE_STORE"] = store
    return env


def wrap_pod(pod_operator: Any, prefix: list[str], env: Mapping[str, str]) -> None:
    """Rewrite a ``KubernetesPodOperator``'s container to run under ``prefix`` with ``env``.

    ``cmds`` becomes ``prefix + cmds``; ``arguments`` stay as they are (the container runs
    command + args). Raises ``ValueError`` when the pod has no ``cmds`` (the image's entrypoint
    runs, and it cannot be known here) or is already wrapped.
    """
    from kubernetes.client import models as k8s

    cmds = list(pod_operator.cmds or [])
    if not cmds:
        raise ValueError(
            "the pod runs its image's entrypoint (no cmds=): give cmds= to have it wrapped"
        )
    if cmds[:2] == ["carbonpipe", "run"]:
        raise ValueError("the pod's command already runs under carbonpipe run")
    pod_operator.cmds = [*prefix, *cmds]
    current = list(pod_operator.env_vars or [])
    if isinstance(pod_operator.env_vars, Mapping):
        current = [k8s.V1EnvVar(name=k, value=v) for k, v in pod_operator.env_vars.items()]
    taken = {getattr(e, "name", None) for e in current}
    pod_operator.env_vars = [
        *current,
        *(k8s.V1EnvVar(name=k, value=v) for k, v in env.items() if k not in taken),
    ]
