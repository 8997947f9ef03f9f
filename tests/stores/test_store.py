"""The store contract, run against the local folder, moto's S3, fake-gcs-server and Azurite."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.errors import (
    InvalidStoreURI,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StorePermissionDenied,
    StoreUnavailable,
)
from carbonpipe.stores import s3 as store_s3
from carbonpipe.stores.azure import AzureBlobStore
from carbonpipe.stores.base import Store
from carbonpipe.stores.gcs import GCSStore
from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.opener import open_store
from carbonpipe.stores.s3 import S3Store
from tests.fault_proxy import FaultProxy, Flaky, s3_store_at, unreachable_store
from tests.object_servers import BACKENDS, s3_put_many

KEY = "records/v1/date=2026-11-24/pipeline=train/0123abcd.json"


def content_type_of(store: Store, key: str) -> str | None:
    """The content type the backend recorded for ``key`` (None for a local folder)."""
    if isinstance(store, S3Store):
        head = store.client.head_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}")
        return str(head["ContentType"])
    if isinstance(store, GCSStore):
        blob = store.client.bucket(store.bucket).get_blob(f"{store.prefix}/{key}")
        return str(blob.content_type)
    if isinstance(store, AzureBlobStore):
        blob = store.client.get_blob_client(f"{store.prefix}/{key}")
        return str(blob.get_blob_properties().content_settings.content_type)
    return None


# -- the contract, on every backend ---------------------------------------------------------
# ...and on the in-memory store that tests of other packages use, so it cannot drift from it.


@pytest.fixture(params=[pytest.param(b, id=b) for b in (*BACKENDS, "memory")])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


def test_put_if_absent_refuses_an_existing_key(store: Store) -> None:
    store.put_if_absent(KEY, b'{"n": 1}')
    with pytest.raises(PreconditionFailed):
        store.put_if_absent(KEY, b'{"n": 2}')
    assert store.get(KEY).data == b'{"n": 1}'


def test_get_returns_the_bytes_and_the_version_of_the_last_write(store: Store) -> None:
    version = store.put_if_absent(KEY, b"first")
    got = store.get(KEY)
    assert (got.key, got.data, got.version) == (KEY, b"first", version)
    assert store.exists(KEY)
    assert not store.exists("records/v1/missing.json")


def test_get_of_a_missing_key_raises_object_not_found(store: Store) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get("baselines/train/fit.json")
    assert isinstance(info.value, KeyError)
    assert "baselines/train/fit.json" in str(info.value)


def test_replace_with_the_current_version_wins_and_a_stale_one_loses(store: Store) -> None:
    store.put_if_absent(KEY, b"v0")
    first, second = store.get(KEY), store.get(KEY)  # two writers read the same version
    new_version = store.replace(KEY, b"v1", if_version=first.version)
    with pytest.raises(PreconditionFailed):
        store.replace(KEY, b"v2", if_version=second.version)
    current = store.get(KEY)
    assert (current.data, current.version) == (b"v1", new_version)
    assert store.replace(KEY, b"v3", if_version=current.version) != new_version


def test_replace_of_a_deleted_key_fails_the_precondition(store: Store) -> None:
    version = store.put_if_absent(KEY, b"v0")
    store.delete(KEY)
    with pytest.raises(PreconditionFailed):
        store.replace(KEY, b"v1", if_version=version)
    assert not store.exists(KEY)


def test_list_walks_hive_partitions_by_prefix(store: Store) -> None:
    keys = [
        "records/v1/date=2026-11-23/pipeline=train/a.json",
        "records/v1/date=2026-11-24/pipeline=serve/b.json",
        "records/v1/date=2026-11-24/pipeline=train/c.json",
        "records/v1/date=2026-11-24/pipeline=train/d.json",
        "records/v1/date=2026-12-01/pipeline=train/e.json",
        "budgets/team=ml/2026-11/ledger.json",
        "budgets/team=ml-ops/2026-11/ledger.json",
        "baselines/train/fit.json",
    ]
    for key in reversed(keys):
        store.put_if_absent(key, b"{}")
    assert list(store.list()) == sorted(keys)
    assert list(store.list("records/v1/")) == sorted(keys[:5])
    assert list(store.list("records/v1/date=2026-11-24/")) == keys[1:4]
    assert list(store.list("records/v1/date=2026-11-24/pipeline=train/")) == keys[2:4]
    assert list(store.list("records/v1/date=2026-11-2")) == keys[:4]
    assert list(store.list("budgets/team=ml/")) == [keys[5]]
    assert list(store.list("esg/")) == []


def test_delete_removes_the_key_and_ignores_a_missing_one(store: Store) -> None:
    store.put_if_absent(KEY, b"{}")
    store.delete(KEY)
    store.delete(KEY)
    assert not store.exists(KEY)
    assert list(store.list("records/")) == []
    store.put_if_absent(KEY, b"again")  # the name is free once more
    assert store.get(KEY).data == b"again"


def test_put_artifact_overwrites_and_keeps_the_content_type(store: Store) -> None:
    key = "esg/2026-11/report.html"
    url = store.put_artifact(key, b"<html>1</html>", content_type="text/html")
    store.put_artifact(key, b"<html>2</html>", content_type="text/html")
    assert store.get(key).data == b"<html>2</html>"
    assert key in url
    assert content_type_of(store, key) in (None, "text/html")
    store.put_artifact("esg/2026-11/emissions.png", b"\x89PNG", content_type="image/png")
    assert content_type_of(store, "esg/2026-11/emissions.png") in (None, "image/png")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("records/../../escape.json", id="dotdot"),
        pytest.param("records//double.json", id="empty-part"),
        pytest.param("records/with space.json", id="space"),
        pytest.param("records/caf\u00e9.json", id="non-ascii"),
        pytest.param("records/", id="trailing-slash"),
    ],
)
def test_invalid_keys_are_refused_before_any_io(store: Store, key: str) -> None:
    operations: list[Callable[[], Any]] = [
        lambda: store.put_if_absent(key, b"{}"),
        lambda: store.replace(key, b"{}", if_version="1"),
        lambda: store.get(key),
        lambda: store.delete(key),
        lambda: store.put_artifact(key, b"{}", content_type="text/plain"),
    ]
    for operation in operations:
        with pytest.raises(ValueError, match="invalid"):
            operation()


def test_exactly_one_of_sixteen_racing_writers_wins(store: Store) -> None:
    start = threading.Barrier(16)
    won: list[int] = []
    lost: list[int] = []
    unexpected: list[BaseException] = []

    def write(i: int) -> None:
        start.wait()
        try:
            store.put_if_absent(KEY, f"writer {i}".encode())
            won.append(i)
        except PreconditionFailed:
            lost.append(i)
        except BaseException as exc:  # surfaced below, with the thread's own error
            unexpected.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not unexpected, unexpected
    assert len(won) == 1 and len(lost) == 15
    assert store.get(KEY).data == f"writer {won[0]}".encode()


# -- S3 -------------------------------------------------------------------------------------


def test_s3_list_paginates_past_1000_keys(s3_store: Any) -> None:
    keys = [f"records/v1/date=2026-11-24/pipeline=p/{i:05d}.json" for i in range(1205)]
    s3_put_many(s3_store, keys)
    s3_put_many(s3_store, ["records/v2/other.json"])
    assert list(s3_store.list("records/v1/")) == keys


def test_s3_keys_are_relative_to_the_prefix(s3_store: Any, s3_endpoint: str) -> None:
    s3_store.put_if_absent("baselines/train/fit.json", b"{}")
    head = s3_store.client.head_object(
        Bucket=s3_store.bucket, Key="carbon/baselines/train/fit.json"
    )
    assert head["ContentLength"] == 2
    root = S3Store(s3_store.bucket, endpoint_url=s3_endpoint)
    sibling = S3Store(s3_store.bucket, "carbon2", endpoint_url=s3_endpoint)
    sibling.put_if_absent("baselines/train/fit.json", b"[]")
    assert list(root.list()) == [
        "carbon/baselines/train/fit.json",
        "carbon2/baselines/train/fit.json",
    ]
    assert list(s3_store.list()) == ["baselines/train/fit.json"]
    assert s3_store.get("baselines/train/fit.json").data == b"{}"
    assert s3_store.uri == "s3://carbonpipe-test/carbon"


def test_s3_retries_a_conditional_request_conflict(
    s3_store: Any,
    fault_proxy: Callable[..., FaultProxy],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_s3, "_CONFLICT_BACKOFF_S", 0.0)
    proxy = fault_proxy(s3_endpoint, "s3")
    via_proxy = s3_store_at(proxy.url, s3_store)
    proxy.fail(409, code="ConditionalRequestConflict", times=2)
    via_proxy.put_if_absent("a.json", b"1")
    assert proxy.requests == 3
    proxy.fail(409, code="ConditionalRequestConflict")
    with pytest.raises(PreconditionFailed, match="ConditionalRequestConflict"):
        via_proxy.put_if_absent("b.json", b"1")
    assert proxy.requests == 3 + store_s3._CONFLICT_ATTEMPTS


def test_s3_open_store_honours_aws_endpoint_url_s3(s3_store: Any) -> None:
    # The s3_store fixture exported AWS_ENDPOINT_URL_S3, as a MinIO deployment would.
    reopened = open_store("s3://carbonpipe-test/carbon")
    reopened.put_if_absent("a.json", b"1")
    assert s3_store.get("a.json").data == b"1"


def test_s3_missing_bucket_is_unavailable_not_missing_object(
    s3_endpoint: str, s3_store: Any
) -> None:
    nowhere = S3Store("no-such-bucket", endpoint_url=s3_endpoint)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        nowhere.put_if_absent("a.json", b"1")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        nowhere.get("a.json")


def test_s3_without_credentials_is_permission_denied(
    s3_store: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StorePermissionDenied, match="credentials"):
        S3Store(s3_store.bucket, endpoint_url=s3_endpoint, max_attempts=1).get("a.json")


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"])
def test_s3_refused_credentials_are_permission_denied(
    s3_store: Any, fault_proxy: Callable[..., FaultProxy], s3_endpoint: str, code: str
) -> None:
    proxy = fault_proxy(s3_endpoint, "s3")
    proxy.fail(403, code=code)
    with pytest.raises(StorePermissionDenied, match=code):
        s3_store_at(proxy.url, s3_store).put_if_absent("a.json", b"1")


def test_s3_throttling_is_unavailable(
    s3_store: Any, fault_proxy: Callable[..., FaultProxy], s3_endpoint: str
) -> None:
    proxy = fault_proxy(s3_endpoint, "s3")
    proxy.fail(503, code="SlowDown")
    with pytest.raises(StoreUnavailable, match="SlowDown"):
        s3_store_at(proxy.url, s3_store).put_if_absent("a.json", b"1")


# -- GCS ------------------------------------------------------------------------------------


def test_gcs_version_is_the_generation(gcs_store: Any) -> None:
    version = gcs_store.put_if_absent("a.json", b"1")
    blob = gcs_store.client.bucket(gcs_store.bucket).get_blob("carbon/a.json")
    assert version == str(blob.generation) and version.isdigit()
    with pytest.raises(ValueError, match="generation"):
        gcs_store.replace("a.json", b"2", if_version='"etag"')


def test_gcs_open_store_honours_storage_emulator_host(gcs_store: Any) -> None:
    # The gcs_store fixture exported STORAGE_EMULATOR_HOST; no credentials exist in the suite.
    reopened = open_store(gcs_store.uri)
    reopened.put_if_absent("a.json", b"1")
    assert gcs_store.get("a.json").data == b"1"
    assert list(reopened.list()) == ["a.json"]


def test_gcs_missing_bucket_on_write_is_unavailable(gcs_store: Any) -> None:
    nowhere = GCSStore("cp-no-such-bucket", retry_timeout_s=0)
    with pytest.raises(StoreUnavailable, match="bucket does not exist"):
        nowhere.put_if_absent("a.json", b"1")


# -- failures, on both object stores --------------------------------------------------------

FAULTS = [
    pytest.param("down", StoreUnavailable, id="down"),
    pytest.param(503, StoreUnavailable, id="503"),
    pytest.param(500, StoreUnavailable, id="500"),
    pytest.param(429, StoreUnavailable, id="429"),
    pytest.param(403, StorePermissionDenied, id="403"),
    pytest.param(401, StorePermissionDenied, id="401"),
]


def inject(flaky: Flaky, fault: str | int) -> None:
    """Put the flaky store's server into ``fault``."""
    if fault == "down":
        flaky.proxy.down()
    else:
        flaky.proxy.fail(int(fault))


@pytest.mark.parametrize(("fault", "error"), FAULTS)
def test_server_failures_become_carbonpipe_errors(
    flaky_store: Flaky, fault: str | int, error: type[StoreError]
) -> None:
    flaky_store.direct.put_if_absent("a.json", b"1")
    version = flaky_store.direct.get("a.json").version
    inject(flaky_store, fault)
    operations: list[Callable[[], Any]] = [
        lambda: flaky_store.store.put_if_absent("b.json", b"1"),
        lambda: flaky_store.store.replace("a.json", b"2", if_version=version),
        lambda: flaky_store.store.get("a.json"),
        lambda: list(flaky_store.store.list()),
        lambda: flaky_store.store.delete("a.json"),
        lambda: flaky_store.store.put_artifact("r.html", b"<p>", content_type="text/html"),
    ]
    started = time.monotonic()
    for operation in operations:
        with pytest.raises(error):
            operation()
    assert time.monotonic() - started < 10, "a failing store must fail fast"
    flaky_store.proxy.up()
    assert flaky_store.store.get("a.json").data == b"1"


@pytest.mark.parametrize("backend", ["s3", "gcs", "azure"])
def test_a_closed_port_is_unavailable(backend: str, closed_port: int) -> None:
    store = unreachable_store(backend, closed_port)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.put_if_absent("a.json", b"1")
    assert time.monotonic() - started < 5


# -- URIs and imports -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param("ftp://host/path", "s3://bucket", id="unknown-scheme"),
        pytest.param("wasbs://container@acct/path", "az://container", id="wasbs"),
        pytest.param("az://Upper_Case/x", "az://container[/prefix]", id="az-bad-container"),
        pytest.param("az://a--b/x", "az://container[/prefix]", id="az-double-hyphen"),
        pytest.param("az://", "az://container[/prefix]", id="az-no-container"),
        pytest.param("s3://", "s3://bucket[/prefix]", id="s3-no-bucket"),
        pytest.param("s3://Upper_Case/x", "s3://bucket[/prefix]", id="s3-bad-bucket"),
        pytest.param("s3://ab", "s3://bucket[/prefix]", id="s3-short-bucket"),
        pytest.param("gs://", "gs://bucket[/prefix]", id="gs-no-bucket"),
        pytest.param("  ", "local folder", id="blank"),
    ],
)
def test_invalid_store_uris_name_the_accepted_forms(uri: str, expected: str) -> None:
    with pytest.raises(InvalidStoreURI) as info:
        open_store(uri)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_open_store_dispatches_on_the_scheme_without_any_io(tmp_path: Path) -> None:
    s3 = open_store("s3://my-bucket/team/a/")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.uri) == ("my-bucket", "team/a", "s3://my-bucket/team/a")
    assert s3._client is None  # nothing was built, let alone contacted
    gcs = open_store("gs://my-bucket")
    assert isinstance(gcs, GCSStore) and (gcs.bucket, gcs.prefix, gcs.uri) == (
        "my-bucket",
        "",
        "gs://my-bucket",
    )
    assert isinstance(open_store("gcs://my-bucket/p"), GCSStore)
    local = open_store(tmp_path / "artifacts")
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "artifacts").resolve()
    assert open_store(s3) is s3


def test_stores_never_show_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    store = S3Store("my-bucket", "p", aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key=secret)
    assert secret not in repr(store) and secret not in store.uri
    assert secret not in str(store.reopen_options())


def test_importing_carbonpipe_stores_does_not_import_the_cloud_sdks() -> None:
    code = (
        "import sys, carbonpipe.stores.base, carbonpipe.stores.spool, carbonpipe.stores.s3, carbonpipe.stores.gcs\n"
        "from carbonpipe.stores.opener import open_store\n"
        "open_store('s3://bucket-a/p'); open_store('gs://bucket-b/p')\n"
        "heavy = [m for m in ('boto3', 'botocore', 'google.cloud.storage') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
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
