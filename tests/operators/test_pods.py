"""Work outside the worker: a KubernetesPodOperator's command wrapped in ``carbonpipe run``
(checked offline with the operator's own ``build_pod_request_obj``), and remote operators
tracked with ``measurement.scope: worker`` and a ``tracking_errors`` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from carbonpipe.record import Record, validate
from carbonpipe.stores.local import LocalStore
from tests.measure.test_kepler import CPU_W
from tests.measure.test_kepler import prometheus as prometheus  # the session's real Prometheus
from tests.operators.conftest import task_states

pytestmark = [
    pytest.mark.timeout(180),
    # The Kubernetes provider still imports Airflow 2 names Airflow 3.3 deprecates.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

pod = pytest.importorskip("airflow.providers.cncf.kubernetes.operators.pod")


def _context(dag: Any, task_id: str, try_number: int = 2) -> dict[str, Any]:
    """What the task runner hands the operator, for an offline pod request."""
    ti = SimpleNamespace(
        dag_id=dag.dag_id,
        run_id="manual__2026-03-01",
        task_id=task_id,
        try_number=try_number,
        map_index=-1,
    )
    return {"ti": ti, "run_id": ti.run_id, "dag": dag, "ds": "2026-03-01"}


_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: me, user: {token: "offline"}}]
contexts: [{name: local, context: {cluster: local, user: me}}]
current-context: local
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    """A kube config the pod request reads (its cluster is never contacted)."""
    path = tmp_path / "kubeconfig"
    path.write_text(_KUBECONFIG)
    return str(path)


def _kpo(**kwargs: Any) -> Any:
    kwargs.setdefault("task_id", "train")
    return pod.KubernetesPodOperator(
        in_cluster=False,
        image="ghcr.io/acme/trainer:1",
        cmds=["python", "train.py"],
        arguments=["--epochs", "{{ ds }}"],
        env_vars={"WANDB_MODE": "offline"},
        **kwargs,
    )


def test_pod_command_runs_under_carbonpipe_run_with_the_steps_identity(kubeconfig: str) -> None:
    from airflow.sdk import DAG

    from carbonpipe.operators import CarbonTrackedOperator

    with DAG("cp_pod", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
        op = CarbonTrackedOperator(
            operator=_kpo(config_file=kubeconfig),
            wrap_pod_command=True,
            project="recsys",
            team="ranking",
            store="s3://acme-carbon/prod",
            cloud_provider="gcp",
            cloud_region="europe-west1",
            labels={"model": "bert"},
        )
    context = _context(dag, "train")
    inner = op.prepared_operator(context)
    request = inner.build_pod_request_obj(context)
    (container,) = request.spec.containers
    cmd = container.command
    assert cmd[:2] == ["carbonpipe", "run"]
    assert cmd[cmd.index("--") + 1 :] == ["python", "train.py"]
    assert container.args == ["--epochs", "2026-03-01"]  # the rendered arguments follow
    opts = cmd[2 : cmd.index("--")]
    pairs = dict(zip(opts[::2], opts[1::2], strict=True))
    assert pairs["--project"] == "recsys"
    assert pairs["--pipeline"] == "cp_pod"
    assert pairs["--team"] == "ranking"
    assert pairs["--run-id"] == "manual__2026-03-01"
    assert pairs["--step"] == "train"
    assert pairs["--attempt"] == "2"
    assert pairs["--store"] == "s3://acme-carbon/prod"
    assert (pairs["--provider"], pairs["--region"]) == ("gcp", "europe-west1")
    labels = [opts[i + 1] for i, o in enumerate(opts) if o == "--label"]
    assert "model=bert" in labels and "airflow_task_id=train" in labels
    env = {e.name: e.value for e in container.env}
    assert env["WANDB_MODE"] == "offline"
    assert env["CARBONPIPE_PROJECT"] == "recsys"
    assert env["CARBONPIPE_PIPELINE"] == "cp_pod"
    assert env["CARBONPIPE_RUN_ID"] == "manual__2026-03-01"
    assert env["CARBONPIPE_STORE"] == "s3://acme-carbon/prod"
    assert op._carbon_pod_note is None  # wrapped: the pod writes the record, the wrapper none
    # The DAG's operator is untouched: a retry wraps the original command again.
    assert op.operator.cmds == ["python", "train.py"]


def test_an_image_listed_as_having_carbonpipe_is_wrapped_and_others_are_not(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: str
) -> None:
    from airflow.sdk import DAG

    from carbonpipe.operators import CarbonTrackedOperator

    monkeypatch.setenv("CARBONPIPE_POD_IMAGES", "ghcr.io/acme/, eu.gcr.io/other/")
    with DAG("cp_pod_img", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None):
        listed = CarbonTrackedOperator(operator=_kpo(config_file=kubeconfig), project="recsys")
        other = CarbonTrackedOperator(
            operator=_kpo(task_id="other", config_file=kubeconfig),
            project="recsys",
            carbonpipe_images=["docker.io/x/"],
        )
    dag = listed.get_dag()
    ctx = _context(dag, "train")
    (c,) = listed.prepared_operator(ctx).build_pod_request_obj(ctx).spec.containers
    assert c.command[:2] == ["carbonpipe", "run"]
    ctx = _context(dag, "other")
    (c,) = other.prepared_operator(ctx).build_pod_request_obj(ctx).spec.containers
    assert c.command == ["python", "train.py"]
    assert "wrap_pod_command=True" in (other._carbon_pod_note or "")


def test_a_pod_on_its_images_entrypoint_cannot_be_wrapped(kubeconfig: str) -> None:
    from airflow.sdk import DAG

    from carbonpipe.operators import CarbonTrackedOperator

    with DAG("cp_pod_ep", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None):
        op = CarbonTrackedOperator(
            operator=pod.KubernetesPodOperator(
                task_id="train", image="ghcr.io/acme/t:1", config_file=kubeconfig, in_cluster=False
            ),
            wrap_pod_command=True,
            project="recsys",
        )
    ctx = _context(op.get_dag(), "train")
    (c,) = op.prepared_operator(ctx).build_pod_request_obj(ctx).spec.containers
    assert not c.command
    assert "entrypoint" in (op._carbon_pod_note or "")


def test_remote_operator_is_tracked_with_worker_scope_and_a_tracking_error(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG, BaseOperator
        from carbonpipe.operators import CarbonTrackedOperator

        class DatabricksSubmitRunOperator(BaseOperator):  # named as the provider's: remote work
            def execute(self, context):
                return "run-42"

        with DAG("cp_remote", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            CarbonTrackedOperator(
                operator=DatabricksSubmitRunOperator(task_id="etl"),
                project="recsys",
                store={str(store)!r},
                country_iso_code="FRA",
            )
        """,
        "cp_remote",
    )
    assert task_states(dr) == {"etl": "success"}
    s = LocalStore(store)
    (record,) = [Record.from_json(s.get(k).data) for k in s.list("records/")]
    validate(record.to_dict())
    assert record.measurement["scope"] == "worker"
    assert any(
        "remote work not measured" in e and "Databricks" in e for e in record.tracking_errors
    )


def test_with_kepler_a_launched_pod_is_charged_its_own_energy(
    run_dag: Callable[..., Any],
    prometheus: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pod operator that "launches" pod ns/p without a cluster: the exporter behind the
    # session's real Prometheus serves Kepler's counters for that pod.
    monkeypatch.setenv("CARBONPIPE_KEPLER_PROMETHEUS_URL", prometheus)
    monkeypatch.delenv("POD_NAME", raising=False)
    store = tmp_path / "store"
    dr = run_dag(
        f"""
        import time
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s
        from carbonpipe.operators import CarbonTrackedOperator

        class LaunchedPod(KubernetesPodOperator):
            def execute(self, context):
                self.pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", namespace="ns"))
                time.sleep(4)

        with DAG("cp_kepler_pod", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            CarbonTrackedOperator(
                operator=LaunchedPod(task_id="train", image="busybox", cmds=["true"]),
                project="recsys",
                store={str(store)!r},
                country_iso_code="FRA",
            )
        """,
        "cp_kepler_pod",
    )
    assert task_states(dr) == {"train": "success"}
    s = LocalStore(store)
    (record,) = [Record.from_json(s.get(k).data) for k in s.list("records/")]
    assert record.measurement["method"] == "kepler", record.tracking_errors
    assert record.measurement.get("scope") is None
    joules = record.energy_kwh["cpu"] * 3.6e6
    assert joules == pytest.approx(CPU_W * record.duration_s, rel=0.5)
    assert not any("not measured" in e for e in record.tracking_errors)
