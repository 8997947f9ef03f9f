"""What is Azure's own in the Azure Blob store: its URIs, its credential chain, its errors, on Azurite.

The contract every backend shares runs in test_store.py (parametrised over azure too); here are
the parts only Azure has: ``If-None-Match: *`` answered 409, ETags as versions, pagination by
``results_per_page``, the SDK's credential chain, and no key or SAS ever shown.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from carbonpipe.errors import (
    InvalidStoreURI,
    ObjectRejected,
    PreconditionFailed,
    StoreError,
    StorePermissionDenied,
    StoreUnavailable,
)
from carbonpipe.stores.azure import AzureBlobStore
from carbonpipe.stores.opener import open_store
from carbonpipe.stores.redact import RedactingFormatter, redact
from carbonpipe.stores.uri import parse_store_uri
from tests.azurite import AZURITE_ACCOUNT, AZURITE_KEY, azure_store_at, connection_string
from tests.fault_proxy import FaultProxy

SAS = "sv=2024-08-04&ss=b&srt=sco&sp=rwdl&se=2030-01-01T00:00:00Z&sig=c2VjcmV0U0FTc2lnbmF0dXJl%3D"


@pytest.fixture
def no_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)


# -- URIs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        pytest.param("az://records", ("az", "records", ""), id="container"),
        pytest.param("az://records/team/a/", ("az", "records", "team/a"), id="prefix"),
        pytest.param("azure://records/p", ("az", "records", "p"), id="duckdb-alias"),
        pytest.param("az://a1-b2-c3/p", ("az", "a1-b2-c3", "p"), id="hyphens"),
    ],
)
def test_az_uris_parse_offline(uri: str, parsed: tuple[str, str, str]) -> None:
    assert parse_store_uri(uri) == parsed


@pytest.mark.parametrize(
    ("uri", "form"),
    [
        pytest.param("az:/x", "az://CONTAINER[/PREFIX]", id="one-slash"),
        pytest.param("az:x", "az://CONTAINER[/PREFIX]", id="no-slash"),
        pytest.param("az//x", "az://CONTAINER[/PREFIX]", id="no-colon"),
        pytest.param("AZ://records", "az://CONTAINER[/PREFIX]", id="upper"),
        pytest.param("Azure://records", "az://CONTAINER[/PREFIX]", id="azure-mixed-case"),
        pytest.param("azure:/records", "az://CONTAINER[/PREFIX]", id="azure-one-slash"),
        pytest.param("az://my.container", "az://container[/prefix]", id="dot"),
        pytest.param("az://ab", "az://container[/prefix]", id="short"),
        pytest.param("az://-records", "az://container[/prefix]", id="leading-hyphen"),
    ],
)
def test_mistyped_az_uris_are_refused_naming_the_form(uri: str, form: str) -> None:
    with pytest.raises(InvalidStoreURI) as info:
        parse_store_uri(uri)
    assert form in str(info.value) and repr(uri) in str(info.value)


def test_open_store_builds_nothing_until_the_first_call(no_azure_env: None) -> None:
    store = open_store("az://records/team/a", timeout_s=7)
    assert isinstance(store, AzureBlobStore)
    assert (store.container, store.prefix, store.uri) == (
        "records",
        "team/a",
        "az://records/team/a",
    )
    assert store._client is None and store.timeout_s == 7.0
    assert store.reopen_options() == {"timeout_s": "7"}


# -- Azure specifics on Azurite -------------------------------------------------------------


def test_the_version_is_the_etag_and_if_none_match_refuses_a_second_create(
    azure_store: Any,
) -> None:
    version = azure_store.put_if_absent("a.json", b"1")
    props = azure_store.client.get_blob_client("carbon/a.json").get_blob_properties()
    assert version == props.etag and version.startswith('"0x')
    with pytest.raises(PreconditionFailed, match="BlobAlreadyExists|412"):
        azure_store.put_if_absent("a.json", b"2")
    with pytest.raises(PreconditionFailed):
        azure_store.replace("a.json", b"3", if_version='"0x8D000000000000"')
    assert azure_store.get("a.json").data == b"1"


def test_keys_are_relative_to_the_prefix(azure_store: Any) -> None:
    azure_store.put_if_absent("baselines/train/fit.json", b"{}")
    names = [b.name for b in azure_store.client.list_blobs()]
    assert names == ["carbon/baselines/train/fit.json"]
    root = AzureBlobStore(azure_store.container)
    sibling = AzureBlobStore(azure_store.container, "carbon2")
    assert list(root.list()) == ["carbon/baselines/train/fit.json"]
    assert list(sibling.list()) == []
    assert azure_store.uri == f"az://{azure_store.container}/carbon"


def test_list_follows_every_page(azure_store: Any) -> None:
    keys = [f"records/v1/k{i:03d}.json" for i in range(23)]
    for key in keys:
        azure_store.put_artifact(key, b"{}", content_type="application/json")
    azure_store.put_artifact("records/v2/other.json", b"{}", content_type="application/json")
    paged = AzureBlobStore(azure_store.container, "carbon", list_page_size=5)
    assert list(paged.list("records/v1/")) == keys
    assert len(list(paged.list())) == 24


def test_open_store_reads_the_connection_string(azure_store: Any) -> None:
    # The azure_store fixture exported AZURE_STORAGE_CONNECTION_STRING (Azurite's account).
    reopened = open_store(azure_store.uri)
    reopened.put_if_absent("a.json", b"1")
    assert azure_store.get("a.json").data == b"1"
    assert list(reopened.list()) == ["a.json"]


def test_account_name_and_key_from_the_environment(
    azure_store: Any, azure_endpoint: str, no_azure_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", azure_endpoint.rsplit("/", 1)[0])
    store = open_store(azure_store.uri)
    store.put_if_absent("env.json", b"1")
    assert azure_store.get("env.json").data == b"1"


def test_an_explicit_key_outranks_the_environments_connection_string(
    azure_store: Any, azure_endpoint: str
) -> None:
    # AZURE_STORAGE_CONNECTION_STRING (Azurite's right key) is set; the option's wrong key wins.
    wrong = AzureBlobStore(
        azure_store.container,
        endpoint_url=azure_endpoint,
        account_key="d3Jvbmcta2V5LXdyb25nLWtleQ==",
        account_name=AZURITE_ACCOUNT,
        max_attempts=1,
    )
    with pytest.raises(StorePermissionDenied):
        wrong.get("a.json")
    only_key = AzureBlobStore(
        azure_store.container, endpoint_url=azure_endpoint, account_key="eA==", max_attempts=1
    )
    with pytest.raises(StorePermissionDenied, match="AZURE_STORAGE_ACCOUNT_NAME"):
        only_key.get("a.json")


def test_a_wrong_account_key_is_permission_denied(
    azure_store: Any, azure_endpoint: str, no_azure_env: None
) -> None:
    wrong = AzureBlobStore(
        azure_store.container,
        endpoint_url=azure_endpoint,
        account_name=AZURITE_ACCOUNT,
        account_key="d3Jvbmcta2V5LXdyb25nLWtleQ==",
        max_attempts=1,
    )
    with pytest.raises(StorePermissionDenied) as info:
        wrong.put_if_absent("a.json", b"1")
    assert "d3Jvbmcta2V5" not in str(info.value)


def test_without_any_credentials_the_store_is_permission_denied(no_azure_env: None) -> None:
    with pytest.raises(StorePermissionDenied, match="AZURE_STORAGE_CONNECTION_STRING"):
        AzureBlobStore("records").get("a.json")


def test_an_account_without_a_key_uses_default_azure_credential(
    no_azure_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import DefaultAzureCredential

    # Built, never used: a token request would go to the identity endpoints.
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "carbonteam")
    store = AzureBlobStore("records", "p")
    assert isinstance(store.client.credential, DefaultAzureCredential)
    assert store.client.url == "https://carbonteam.blob.core.windows.net/records"
    store.close()
    sovereign = AzureBlobStore("records", endpoint_suffix="core.chinacloudapi.cn")
    assert sovereign.client.url == "https://carbonteam.blob.core.chinacloudapi.cn/records"
    assert sovereign.reopen_options()["endpoint_suffix"] == "core.chinacloudapi.cn"
    sovereign.close()


def test_a_sas_token_is_a_credential_and_never_shown(
    no_azure_env: None, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "carbonteam")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", SAS)
    store = AzureBlobStore(
        "records", endpoint_url=f"http://127.0.0.1:{closed_port}", max_attempts=1
    )
    with pytest.raises(StoreUnavailable) as info:
        store.put_if_absent("a.json", b"1")
    assert "c2VjcmV0U0FT" not in str(info.value) and "sig=" not in str(info.value)
    assert SAS not in repr(store) and SAS not in str(store.reopen_options())


def test_a_missing_container_is_unavailable_not_a_missing_object(azure_store: Any) -> None:
    nowhere = AzureBlobStore("cp-no-such-container", max_attempts=1)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        nowhere.put_if_absent("a.json", b"1")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        nowhere.get("a.json")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        list(nowhere.list())


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        pytest.param(403, "AuthorizationPermissionMismatch", StorePermissionDenied, id="rbac"),
        pytest.param(403, "AuthenticationFailed", StorePermissionDenied, id="key"),
        pytest.param(503, "ServerBusy", StoreUnavailable, id="busy"),
        pytest.param(400, "InvalidBlobOrBlock", ObjectRejected, id="bad-object"),
        pytest.param(400, "InvalidResourceName", StoreUnavailable, id="bad-container"),
        pytest.param(409, "ContainerBeingDeleted", StoreUnavailable, id="container-going"),
        pytest.param(409, "LeaseIdMissing", StoreError, id="leased"),
    ],
)
def test_azure_error_codes_become_carbonpipe_errors(
    azure_store: Any,
    azure_endpoint: str,
    fault_proxy: Callable[..., FaultProxy],
    status: int,
    code: str,
    error: type[StoreError],
) -> None:
    proxy = fault_proxy(azure_endpoint, "azure")
    proxy.fail(status, code=code)
    with pytest.raises(error) as info:
        azure_store_at(proxy.url, azure_store).put_if_absent("a.json", b"1")
    assert type(info.value) is error or error is StoreError
    assert code in str(info.value)


def test_errors_and_logs_never_show_the_account_key(
    azure_store: Any, azure_endpoint: str, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(azure_endpoint, "azure")
    proxy.deny()
    with pytest.raises(StorePermissionDenied) as info:
        azure_store_at(proxy.url, azure_store).get("a.json")
    assert AZURITE_KEY not in str(info.value) and AZURITE_KEY[:20] not in str(info.value)
    text = connection_string(azure_endpoint)  # also the environment's, scrubbed whole
    assert AZURITE_KEY not in redact(text)
    other = text.replace(azure_endpoint, "https://elsewhere.example")
    assert AZURITE_KEY not in redact(other) and "AccountKey=***;" in redact(other)
    assert "c2VjcmV0U0FT" not in redact(f"https://a.blob.core.windows.net/c/b?{SAS}")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "opening %s", (text,), None)
    assert AZURITE_KEY not in RedactingFormatter().format(record)


def test_the_sdk_logs_no_line_per_request_unless_asked(azure_store: Any) -> None:
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from carbonpipe.stores.opener import open_store\n"
        f"open_store({azure_store.uri!r}).put_if_absent('quiet.json', b'1')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr
    assert "Request URL" not in out.stderr and "Response status" not in out.stderr, out.stderr
    assert azure_store.get("quiet.json").data == b"1"


def test_importing_the_azure_store_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "from carbonpipe.stores.opener import open_store\n"
        "open_store('az://records/p')\n"
        "print(','.join(m for m in ('azure.storage.blob', 'azure.identity') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_the_image_can_write_to_every_object_store() -> None:
    import re

    from tests.test_image import DOCKERFILE, pip_install_args

    [spec] = pip_install_args(DOCKERFILE.read_text())
    found = re.fullmatch(r"\.\[([\w,]+)\]", spec)
    assert found is not None and {"s3", "gcs", "azure"} <= set(found.group(1).split(","))
