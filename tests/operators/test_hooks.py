"""Store credentials from Airflow connections, and storage through one pointing at moto's S3."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from carbonpipe.operators.hooks import (
    CarbonStoreHook,
    azure_options,
    gcs_options,
    s3_options,
    store_scheme,
)
from tests.operators.conftest import task_states, xcom_value


def _conn(conn_type: str, **fields: Any) -> Any:
    from airflow.sdk import Connection

    extra = fields.pop("extra", None)
    return Connection(
        conn_id="c", conn_type=conn_type, extra=json.dumps(extra) if extra else None, **fields
    )


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        pytest.param("s3://b/p", "s3", id="s3"),
        pytest.param("gs://b", "gs", id="gs"),
        pytest.param("gcs://b", "gs", id="gcs"),
        pytest.param("az://c/p", "az", id="az"),
        pytest.param("azure://c", "az", id="azure"),
        pytest.param("/data/carbon", "", id="folder"),
    ],
)
def test_store_scheme(uri: str, scheme: str) -> None:
    assert store_scheme(uri) == scheme


def test_s3_options_read_keys_region_and_endpoint_like_the_amazon_provider() -> None:
    conn = _conn(
        "aws",
        login="AKIA",
        password="secret",
        extra={
            "region_name": "eu-west-1",
            "aws_session_token": "tok",
            "endpoint_url": "http://minio:9000",
        },
    )
    assert s3_options(conn) == {
        "endpoint_url": "http://minio:9000",
        "aws_access_key_id": "AKIA",
        "aws_secret_access_key": "secret",
        "region_name": "eu-west-1",
        "aws_session_token": "tok",
    }
    nested = _conn("aws", extra={"service_config": {"s3": {"endpoint_url": "http://ceph"}}})
    assert s3_options(nested) == {"endpoint_url": "http://ceph"}


def test_gcs_options_read_project_and_emulator_endpoint() -> None:
    conn = _conn(
        "google_cloud_platform", extra={"project": "acme", "endpoint_url": "http://127.0.0.1:4443"}
    )
    assert gcs_options(conn) == {"project": "acme", "endpoint_url": "http://127.0.0.1:4443"}


def test_azure_options_read_a_wasb_connection_like_the_azure_provider() -> None:
    text = "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net"
    assert azure_options(_conn("wasb", extra={"connection_string": text})) == {
        "connection_string": text
    }
    legacy = _conn("wasb", extra={"extra__wasb__connection_string": text})
    assert azure_options(legacy) == {"connection_string": text}
    assert azure_options(_conn("wasb", login="acme", password="a2V5")) == {
        "account_name": "acme",
        "account_key": "a2V5",
    }
    by_host = _conn("wasb", host="https://acme.blob.core.chinacloudapi.cn", password="a2V5")
    assert azure_options(by_host) == {
        "endpoint_url": "https://acme.blob.core.chinacloudapi.cn",
        "account_name": "acme",
        "account_key": "a2V5",
    }
    sas = _conn("wasb", login="acme", extra={"sas_token": "sv=2024&sig=c2ln"})
    assert azure_options(sas) == {"account_name": "acme", "sas_token": "sv=2024&sig=c2ln"}
    sas_url = _conn("wasb", extra={"sas_token": "https://acme.blob.core.windows.net/?sv=1&sig=x"})
    assert azure_options(sas_url) == {
        "endpoint_url": "https://acme.blob.core.windows.net",
        "sas_token": "sv=1&sig=x",
    }
    assert azure_options(_conn("wasb", login="acme")) == {"account_name": "acme"}


def test_azure_options_build_identity_credentials_without_any_request() -> None:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    principal = _conn(
        "wasb",
        host="https://acme.blob.core.windows.net",
        login="client-id",
        password="client-secret",
        extra={"tenant_id": "tenant"},
    )
    options = azure_options(principal)
    assert isinstance(options.pop("credential"), ClientSecretCredential)
    assert options == {"endpoint_url": "https://acme.blob.core.windows.net", "account_name": "acme"}
    identity = _conn("wasb", login="acme", extra={"managed_identity_client_id": "mi"})
    assert isinstance(azure_options(identity)["credential"], DefaultAzureCredential)


def test_local_store_needs_no_connection(tmp_path: Any) -> None:
    hook = CarbonStoreHook(str(tmp_path), aws_conn_id="missing", gcp_conn_id="missing")
    assert hook.store_options() == {}
    assert hook.get_store().uri == str(tmp_path)


def test_records_reach_s3_through_an_airflow_connection(
    run_dag: Callable[..., Any], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tests.object_servers import reset_moto

    reset_moto(s3_endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CARBON_S3", json.dumps(connection))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="airflow-carbon")

    dr = run_dag(
        """
        from datetime import datetime, timezone
        from airflow.sdk import DAG, task

        with DAG("cp_s3", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            @task.carbon_tracked(store="s3://airflow-carbon/prod", aws_conn_id="carbon_s3", country_iso_code="FRA")
            def train():
                return "ok"

            train()
        """,
        "cp_s3",
    )
    assert task_states(dr) == {"train": "success"}
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="airflow-carbon", Prefix="prod/records/")["Contents"]
    ]
    record_id = xcom_value(dr, "train", key="carbon_metrics")["record_id"]
    assert keys == [
        f"prod/records/v2/date={keys[0].split('date=')[1][:10]}/pipeline_key=cp_s3/{record_id}.json"
    ]


def test_records_reach_azure_through_a_wasb_connection(
    run_dag: Callable[..., Any],
    azure_store: Any,
    azure_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.azurite import AZURITE_ACCOUNT, AZURITE_KEY

    checker = azure_store.client  # built before the account leaves the environment
    # Only the connection knows the account: no AZURE_* variable is left for the SDK's chain.
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    connection = {
        "conn_type": "wasb",
        "host": azure_endpoint,
        "login": AZURITE_ACCOUNT,
        "password": AZURITE_KEY,
    }
    monkeypatch.setenv("AIRFLOW_CONN_CARBON_AZURE", json.dumps(connection))
    container = azure_store.container

    dr = run_dag(
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG, task

        with DAG("cp_az", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            @task.carbon_tracked(store="az://{container}/prod", azure_conn_id="carbon_azure", country_iso_code="NLD")
            def train():
                return "ok"

            train()
        """,
        "cp_az",
    )
    assert task_states(dr) == {"train": "success"}
    names = [b.name for b in checker.list_blobs(name_starts_with="prod/records/")]
    record_id = xcom_value(dr, "train", key="carbon_metrics")["record_id"]
    assert len(names) == 1 and names[0].endswith(f"/pipeline_key=cp_az/{record_id}.json")
