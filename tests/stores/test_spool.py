"""The spool: whatever happens to the store, no record is lost and none is written twice."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.errors import StoreUnavailable
from carbonpipe.stores.base import Store, StoredObject
from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.spool import (
    DEFAULT_SPOOL_DIR,
    Delivery,
    deliver,
    pending,
    replay,
    spool_dir,
)
from tests.fault_proxy import FaultProxy, Flaky, s3_store_at, store_at
from tests.object_servers import S3_BUCKET

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def record(i: int) -> tuple[str, bytes]:
    """The key and bytes of the ``i``-th test record."""
    key = f"records/v1/date=2026-11-24/pipeline=train/{i:04d}.json"
    return key, json.dumps({"record_id": f"{i:04d}", "emissions_kg_co2e": i / 1000}).encode()


def spooled_files(root: Path) -> list[Path]:
    return sorted((root / "pending").glob("*.json")) if (root / "pending").is_dir() else []


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """The spool folder deliver() and replay() use by default in this test."""
    return spool_dir()


class BlockedLocal:
    """A LocalStore whose folder cannot be created until ``unblock()``: a local store that is down."""

    def __init__(self, tmp_path: Path, name: str = "store") -> None:
        self.blocker = tmp_path / f"{name}-blocker"
        self.blocker.write_text("a file where a folder should be")
        self.store = LocalStore(self.blocker / name)

    def unblock(self) -> None:
        self.blocker.unlink()


# -- deliver --------------------------------------------------------------------------------


def test_deliver_writes_once_and_a_repeat_of_the_same_bytes_is_a_duplicate(
    store: Store, spool: Path
) -> None:
    key, data = record(1)
    assert deliver(store, key, data) == Delivery(
        key, stored=True, spooled=False, duplicate=False, error=None
    )
    again = deliver(store, key, data)
    assert (again.stored, again.spooled, again.duplicate, again.error) == (False, False, True, None)
    assert list(store.list("records/")) == [key]
    assert spooled_files(spool) == []


def test_deliver_never_overwrites_different_bytes_and_keeps_ours_in_conflicts(
    store: Store, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, data = record(2)
    store.put_if_absent(key, b'{"someone": "else"}')
    with caplog.at_level(logging.ERROR, logger="carbonpipe"):
        result = deliver(store, key, data)
    assert not result.stored and not result.spooled and not result.duplicate
    assert result.error and "different bytes" in result.error
    assert store.get(key).data == b'{"someone": "else"}'
    kept = list((spool / "conflicts").glob("*.json"))
    assert len(kept) == 1 and result.spool_path == str(kept[0])
    assert json.loads(kept[0].read_text())["key"] == key
    assert any("conflict" in r.getMessage() for r in caplog.records)
    assert replay().delivered == 0  # a conflict is not retried behind anyone's back


def test_deliver_spools_on_any_unexpected_store_exception(spool: Path) -> None:
    class Broken(LocalStore):
        def put_if_absent(
            self, key: str, data: bytes, *, content_type: str = "application/json"
        ) -> str:
            raise RuntimeError("bug in a store")

    broken = Broken(spool.parent / "broken")
    key, data = record(3)
    result = deliver(broken, key, data, content_type="application/x-ndjson")
    assert result.spooled and not result.stored and "bug in a store" in (result.error or "")
    [item] = pending()
    assert (item.store_uri, item.key, item.content_type) == (
        broken.uri,
        key,
        "application/x-ndjson",
    )
    assert item.read_data() == data and item.size_bytes == len(data)
    report = replay(store=LocalStore(broken.root))
    assert (report.delivered, report.remaining) == (1, 0)
    assert LocalStore(broken.root).get(key).data == data


def test_deliver_raises_only_when_the_spool_itself_cannot_be_written(tmp_path: Path) -> None:
    down = BlockedLocal(tmp_path)
    not_a_folder = tmp_path / "spool-blocker"
    not_a_folder.write_text("")
    with pytest.raises(StoreUnavailable) as info:
        deliver(down.store, *record(4), spool_dir=not_a_folder / "spool")
    assert "cannot deliver" in str(info.value) and "cannot spool" in str(info.value)


def test_spooling_the_same_object_twice_keeps_one_envelope(tmp_path: Path, spool: Path) -> None:
    down = BlockedLocal(tmp_path)
    key, data = record(5)
    first, second = deliver(down.store, key, data), deliver(down.store, key, data)
    assert first.spooled and second.spooled and first.spool_path == second.spool_path
    assert len(spooled_files(spool)) == 1


def test_spool_dir_prefers_the_argument_then_the_environment_then_the_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_SPOOL_DIR", str(tmp_path / "from-env"))
    assert spool_dir(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert spool_dir() == tmp_path / "from-env"
    monkeypatch.delenv("CARBONPIPE_SPOOL_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert spool_dir() == tmp_path / "home" / ".cache" / "carbonpipe" / "spool"
    assert str(DEFAULT_SPOOL_DIR).startswith("~")


# -- faults on the object stores ------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [pytest.param("down", id="down"), pytest.param(503, id="503"), pytest.param(403, id="403")],
)
def test_a_failing_store_spools_and_replay_delivers_once_it_is_back(
    flaky_store: Flaky, fault: str | int, spool: Path
) -> None:
    key, data = record(6)
    if fault == "down":
        flaky_store.proxy.down()
    else:
        flaky_store.proxy.fail(int(fault))
    result = deliver(flaky_store.store, key, data)
    assert result.spooled and not result.stored and result.error
    assert replay(store=flaky_store.store).remaining == 1  # still failing: nothing is dropped
    flaky_store.proxy.up()
    report = replay()  # reopens the store from the URI and options in the envelope
    assert (report.delivered, report.duplicates, report.remaining, report.failed) == (1, 0, 0, [])
    assert flaky_store.direct.get(key).data == data
    assert spooled_files(spool) == []


def test_no_record_is_lost_while_the_store_flaps(flaky_store: Flaky, spool: Path) -> None:
    outcomes = []
    for i in range(50):
        if i == 10:
            flaky_store.proxy.down()
        elif i == 25:
            flaky_store.proxy.fail(503)
        elif i == 35:
            flaky_store.proxy.up()
        elif i == 40:
            flaky_store.proxy.deny()
        elif i == 45:
            flaky_store.proxy.up()
        outcomes.append(deliver(flaky_store.store, *record(i)))
    stored = sum(o.stored for o in outcomes)
    spooled = sum(o.spooled for o in outcomes)
    assert (stored, spooled) == (20, 30)  # up for 0-9, 35-39 and 45-49
    assert len(pending()) == 30

    report = replay()
    assert (report.delivered, report.duplicates, report.remaining, report.failed) == (30, 0, 0, [])
    keys = list(flaky_store.direct.list("records/v1/"))
    assert keys == [record(i)[0] for i in range(50)]
    assert all(flaky_store.direct.get(k).data == record(i)[1] for i, k in enumerate(keys))

    again = replay()
    assert (again.delivered, again.duplicates, again.remaining) == (0, 0, 0)
    assert len(list(flaky_store.direct.list("records/v1/"))) == 50


def test_replay_against_a_store_still_down_keeps_everything_and_gives_up_fast(
    flaky_store: Flaky, spool: Path
) -> None:
    flaky_store.proxy.down()
    for i in range(20):
        assert deliver(flaky_store.store, *record(i)).spooled
    started = time.monotonic()
    report = replay(store=flaky_store.store)
    assert time.monotonic() - started < 5
    assert (report.delivered, report.remaining, len(report.failed)) == (0, 20, 1)
    assert len(spooled_files(spool)) == 20


def test_replay_of_an_object_that_already_arrived_counts_a_duplicate(flaky_store: Flaky) -> None:
    key, data = record(7)
    flaky_store.proxy.fail(503)
    assert deliver(flaky_store.store, key, data).spooled
    flaky_store.direct.put_if_absent(key, data)  # e.g. the first attempt landed after all
    flaky_store.proxy.up()
    report = replay()
    assert (report.delivered, report.duplicates, report.remaining) == (0, 1, 0)


# -- replay ---------------------------------------------------------------------------------


def test_replay_twice_is_idempotent(tmp_path: Path, spool: Path) -> None:
    down = BlockedLocal(tmp_path)
    for i in range(5):
        assert deliver(down.store, *record(i)).spooled
    down.unblock()
    first = replay()
    second = replay()
    assert (first.delivered, first.remaining) == (5, 0)
    assert (second.delivered, second.duplicates, second.remaining, second.failed) == (0, 0, 0, [])
    assert len(list(down.store.list())) == 5


def test_replay_with_a_store_replays_only_that_stores_objects(tmp_path: Path) -> None:
    a, b = BlockedLocal(tmp_path, "a"), BlockedLocal(tmp_path, "b")
    deliver(a.store, *record(1))
    deliver(b.store, *record(2))
    a.unblock()
    b.unblock()
    report = replay(store=a.store)
    assert (report.delivered, report.remaining) == (1, 1)
    assert [i.store_uri for i in pending()] == [b.store.uri]
    assert replay().delivered == 1
    assert b.store.get(record(2)[0]).data == record(2)[1]


def test_replay_keeps_a_conflicting_object_instead_of_overwriting(
    tmp_path: Path, spool: Path
) -> None:
    down = BlockedLocal(tmp_path)
    key, data = record(8)
    deliver(down.store, key, data)
    down.unblock()
    down.store.put_if_absent(key, b'{"written": "meanwhile"}')
    report = replay()
    assert (report.delivered, report.conflicts, report.remaining) == (0, 1, 0)
    assert "different bytes" in report.failed[0]
    assert down.store.get(key).data == b'{"written": "meanwhile"}'
    [kept] = (spool / "conflicts").glob("*.json")
    assert json.loads(kept.read_text())["key"] == key


def test_unreadable_envelopes_are_quarantined_never_deleted(spool: Path) -> None:
    (spool / "pending").mkdir(parents=True)
    (spool / "pending" / "garbage.json").write_text("{not json")
    report = replay()
    assert report.remaining == 0 and "unreadable" in report.failed[0]
    assert (spool / "quarantine" / "garbage.json").read_text() == "{not json"
    [item] = report.quarantined
    assert (item.reason, item.path) == ("unreadable", spool / "quarantine" / "garbage.json")
    why = json.loads((spool / "quarantine" / "garbage.json.reason.json").read_text())
    assert why["reason"] == "unreadable" and "unreadable spool envelope" in why["error"]


def test_replay_of_an_empty_or_missing_spool_does_nothing(tmp_path: Path) -> None:
    report = replay(tmp_path / "never-created")
    assert (report.delivered, report.duplicates, report.remaining, report.failed) == (0, 0, 0, [])
    assert pending(tmp_path / "never-created") == []


_REPLAYER = """
import json, sys, time
from pathlib import Path
import boto3  # warm the import, so both replays start together
from carbonpipe.stores.spool import replay
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
r = replay()
print(json.dumps({"delivered": r.delivered, "duplicates": r.duplicates, "failed": r.failed}))
"""


@pytest.fixture
def flaky_s3(
    s3_store: Any, s3_endpoint: str, fault_proxy: Callable[..., FaultProxy]
) -> Iterator[Flaky]:
    """An S3 store behind a fault proxy (the S3 half of ``flaky_store``)."""
    proxy = fault_proxy(s3_endpoint, "s3")
    yield Flaky(backend="s3", store=s3_store_at(proxy.url, s3_store), direct=s3_store, proxy=proxy)


@pytest.fixture(params=["s3", "azure"])
def flaky_replayed(
    request: pytest.FixtureRequest, fault_proxy: Callable[..., FaultProxy]
) -> Iterator[Flaky]:
    """An S3 or Azure Blob store behind a fault proxy, for the replays run in other processes."""
    backend = request.param
    direct: Any = request.getfixturevalue(f"{backend}_store")
    proxy = fault_proxy(request.getfixturevalue(f"{backend}_endpoint"), backend)
    yield Flaky(
        backend=backend, store=store_at(backend, proxy.url, direct), direct=direct, proxy=proxy
    )


def test_concurrent_replays_from_two_processes_deliver_each_object_once(
    flaky_replayed: Flaky, tmp_path: Path
) -> None:
    flaky_s3 = flaky_replayed
    flaky_s3.proxy.down()
    for i in range(60):
        assert deliver(flaky_s3.store, *record(i)).spooled
    flaky_s3.proxy.up()
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLAYER, str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for r in ready
    ]
    deadline = time.monotonic() + 30
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["delivered"] for r in results) == 60
    assert sum(r["duplicates"] for r in results) == 0
    assert all(r["failed"] == [] for r in results)
    assert len(list(flaky_s3.direct.list("records/"))) == 60
    assert pending() == []


# -- secrets --------------------------------------------------------------------------------


def test_no_secret_reaches_the_spool_or_the_logs(
    flaky_s3: Flaky,
    spool: Path,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from carbonpipe.stores.s3 import S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    caplog.set_level(logging.DEBUG, logger="carbonpipe")
    denied = s3_store_at(flaky_s3.proxy.url, flaky_s3.direct)
    flaky_s3.proxy.deny()
    assert deliver(denied, *record(1)).spooled
    leaky_endpoint = f"http://AKIAIOSFODNN7EXAMPLE:{SECRET}@127.0.0.1:{closed_port}"
    leaky = S3Store(S3_BUCKET, "carbon", endpoint_url=leaky_endpoint, max_attempts=1)
    result = deliver(leaky, *record(2))
    assert result.spooled and SECRET not in (result.error or "")
    flaky_s3.proxy.up()
    replay(store=denied)
    for path in spool.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
            assert "AKIAIOSFODNN7EXAMPLE:" not in path.read_text(errors="replace"), path
    assert SECRET not in caplog.text
    assert caplog.records, "deliver() should have logged the spooling"


def test_no_azure_key_or_sas_reaches_the_spool_or_the_logs(
    azure_store: Any,
    azure_endpoint: str,
    fault_proxy: Callable[..., FaultProxy],
    spool: Path,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from carbonpipe.stores.azure import AzureBlobStore
    from tests.azurite import AZURITE_KEY

    caplog.set_level(logging.DEBUG)  # the SDK's own loggers too
    proxy = fault_proxy(azure_endpoint, "azure")
    denied = store_at("azure", proxy.url, azure_store)  # the key comes from the connection string
    proxy.deny()
    assert deliver(denied, *record(1)).spooled
    sas = f"sv=2024-08-04&sp=rwdl&sig={SECRET}"
    leaky = AzureBlobStore(
        azure_store.container,
        "carbon",
        endpoint_url=f"http://127.0.0.1:{closed_port}/devstoreaccount1?{sas}",
        sas_token=sas,
        max_attempts=1,
    )
    result = deliver(leaky, *record(2))
    assert result.spooled and SECRET not in (result.error or "")
    proxy.up()
    assert replay(store=denied).delivered == 2  # the same az:// store: both entries
    for path in spool.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert SECRET not in text and AZURITE_KEY not in text, path
    assert SECRET not in caplog.text and AZURITE_KEY not in caplog.text
    assert azure_store.get(record(1)[0]).data == record(1)[1]
    assert SECRET not in str(leaky.reopen_options()) and "?" not in str(leaky.reopen_options())


def test_a_store_read_error_after_a_lost_race_still_spools(spool: Path, tmp_path: Path) -> None:
    class Flaps(LocalStore):
        """The key exists, but reading it back fails: deliver cannot tell, so it spools."""

        def get(self, key: str) -> StoredObject:
            raise StoreUnavailable("read timed out")

    target = Flaps(tmp_path / "s")
    key, data = record(9)
    target.put_if_absent(key, data)
    result = deliver(target, key, data)
    assert result.spooled and "read timed out" in (result.error or "")
    assert replay(store=LocalStore(target.root)).duplicates == 1


# -- a pod's spool goes with the pod ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "says"),
    [
        pytest.param({"KFP_POD_NAME": "train-abc"}, "carbon_record output artifact", id="kfp"),
        pytest.param({"AIRFLOW_CTX_DAG_ID": "train"}, "carbon_record XCom", id="airflow"),
    ],
)
def test_an_orchestrator_task_in_a_pod_is_told_its_spool_may_be_lost(
    tmp_path: Path,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    says: str,
) -> None:
    from carbonpipe.stores.spool import deliver
    from tests.fault_proxy import unreachable_store

    monkeypatch.delenv("CARBONPIPE_SPOOL_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default spool, under ~/.cache
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")  # only read, never contacted
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = unreachable_store("s3", closed_port)
    caplog.set_level(logging.WARNING, logger="carbonpipe")
    delivery = deliver(store, "records/v1/date=2026-12-04/pipeline=p/r.json", b"{}")
    assert delivery.spooled and str(tmp_path) in str(delivery.spool_path)
    assert any(says in r.getMessage() for r in caplog.records), caplog.text
    assert any("CARBONPIPE_SPOOL_DIR" in r.getMessage() for r in caplog.records)

    caplog.clear()
    monkeypatch.setenv("CARBONPIPE_SPOOL_DIR", str(tmp_path / "persistent-volume"))
    deliver(store, "records/v1/date=2026-12-04/pipeline=p/s.json", b"{}")
    assert not any(says in r.getMessage() for r in caplog.records)
