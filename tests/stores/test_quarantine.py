"""The spool's quarantine: one entry a store will never take must not hold back the others."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.errors import ObjectRejected
from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.spool import deliver, pending, quarantined, replay, spool_dir
from tests.fault_proxy import FaultProxy, Flaky, s3_store_at

# A partition folder name longer than any filesystem's 255-byte limit.
TOO_LONG = "p" * 300


def record(i: int) -> tuple[str, bytes]:
    key = f"records/v1/date=2026-11-24/pipeline=train/{i:04d}.json"
    return key, json.dumps({"record_id": f"{i:04d}"}).encode()


def bad_record(pipeline: str = TOO_LONG) -> tuple[str, bytes]:
    """A record whose key the store refuses for good (named ``bad-entry`` for the fault proxy)."""
    key = f"records/v1/date=2026-11-24/pipeline={pipeline}/bad-entry.json"
    return key, b'{"record_id": "bad-entry"}'


@pytest.fixture
def spool() -> Path:
    return spool_dir()


class BlockedLocal:
    """A LocalStore whose folder cannot be created until ``unblock()``: a local store that is down."""

    def __init__(self, tmp_path: Path) -> None:
        self.blocker = tmp_path / "blocker"
        self.blocker.write_text("a file where a folder should be")
        self.store = LocalStore(self.blocker / "store")

    def unblock(self) -> None:
        self.blocker.unlink()


def make_oldest(path: str | None) -> None:
    """Put a spooled entry first in replay order (oldest first)."""
    assert path is not None
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))


def reason_of(item_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        item_path.with_name(item_path.name + ".reason.json").read_text()
    )
    return data


def test_an_entry_the_local_store_refuses_no_longer_holds_back_the_others(
    tmp_path: Path, spool: Path
) -> None:
    down = BlockedLocal(tmp_path)
    bad_key, bad_data = bad_record()
    make_oldest(deliver(down.store, bad_key, bad_data).spool_path)
    for i in range(2):
        assert deliver(down.store, *record(i)).spooled
    down.unblock()

    report = replay()

    assert (report.delivered, report.remaining, report.newly_quarantined) == (2, 0, 1)
    assert [down.store.get(record(i)[0]).data for i in range(2)] == [record(i)[1] for i in range(2)]
    [item] = report.quarantined
    assert item.path.parent == spool / "quarantine" and item.reason == "rejected"
    why = reason_of(item.path)
    assert why["reason"] == "rejected" and why["key"] == bad_key
    assert why["store"] == down.store.uri and why["quarantined_at"].endswith("Z")
    assert "ObjectRejected" in why["error"] and "too long" in why["error"]
    # The entry is the envelope as it was: nothing is lost.
    assert json.loads(item.path.read_text())["key"] == bad_key
    again = replay()
    assert (again.delivered, again.remaining, len(again.quarantined)) == (0, 0, 1)
    assert quarantined() == again.quarantined


def test_deliver_puts_an_object_the_store_refuses_for_good_straight_into_quarantine(
    tmp_path: Path, spool: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    result = deliver(store, *bad_record())
    assert result.spooled and not result.stored and "ObjectRejected" in (result.error or "")
    assert result.spool_path is not None
    assert Path(result.spool_path).parent == spool / "quarantine"
    assert pending() == [] and [q.path for q in quarantined()] == [Path(result.spool_path)]
    with pytest.raises(ObjectRejected):
        store.put_if_absent(*bad_record())
    assert not store.exists(bad_record()[0])  # a name too long to exist is simply absent


def test_an_object_store_400_quarantines_that_entry_and_a_retry_delivers_it(
    flaky_store: Flaky, spool: Path
) -> None:
    flaky_store.proxy.down()
    bad_key, bad_data = bad_record("train")
    make_oldest(deliver(flaky_store.store, bad_key, bad_data).spool_path)
    for i in range(2):
        assert deliver(flaky_store.store, *record(i)).spooled
    flaky_store.proxy.fail(400, code="KeyTooLongError", match="bad-entry")

    report = replay()

    assert (report.delivered, report.remaining, report.newly_quarantined) == (2, 0, 1)
    assert sorted(flaky_store.direct.list("records/")) == [record(0)[0], record(1)[0]]
    [item] = report.quarantined
    why = reason_of(item.path)
    assert (why["reason"], why["key"]) == ("rejected", bad_key)
    assert why["store"] == flaky_store.store.uri and "400" in why["error"]

    flaky_store.proxy.up()  # e.g. the bucket's policy was fixed
    retried = replay(retry_quarantined=True)
    assert (retried.released, retried.delivered, retried.quarantined) == (1, 1, [])
    assert flaky_store.direct.get(bad_key).data == bad_data
    assert not (spool / "quarantine" / (item.path.name + ".reason.json")).exists()


@pytest.fixture
def flaky_s3(
    s3_store: Any, s3_endpoint: str, fault_proxy: Callable[..., FaultProxy]
) -> Iterator[Flaky]:
    proxy = fault_proxy(s3_endpoint, "s3")
    yield Flaky(backend="s3", store=s3_store_at(proxy.url, s3_store), direct=s3_store, proxy=proxy)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(503, None, id="503"),
        pytest.param(429, None, id="throttled"),
        pytest.param(403, None, id="denied"),
        pytest.param(400, "RequestTimeout", id="request-timeout"),
        pytest.param(400, "InvalidBucketName", id="bad-bucket"),
    ],
)
def test_a_store_that_cannot_be_used_keeps_every_entry_and_is_not_retried_per_entry(
    flaky_s3: Flaky, spool: Path, status: int, code: str | None
) -> None:
    flaky_s3.proxy.down()
    for i in range(5):
        assert deliver(flaky_s3.store, *record(i)).spooled
    flaky_s3.proxy.fail(status, code=code)
    report = replay()
    assert (report.delivered, report.remaining, report.quarantined) == (0, 5, [])
    assert flaky_s3.proxy.requests <= 3  # the SDK's attempts for the first entry, then no more
    assert len(report.failed) == 1
    assert not (spool / "quarantine").exists()


def test_an_unexpected_error_on_one_entry_keeps_it_and_goes_on_with_the_others(
    tmp_path: Path, spool: Path
) -> None:
    class OneBadKey(LocalStore):
        def put_if_absent(
            self, key: str, data: bytes, *, content_type: str = "application/json"
        ) -> str:
            if "0000" in key:
                raise RuntimeError("a bug on this key only")
            return super().put_if_absent(key, data, content_type=content_type)

    down = BlockedLocal(tmp_path)
    for i in range(3):
        entry = deliver(down.store, *record(i))
        if i == 0:
            make_oldest(entry.spool_path)
    down.unblock()
    report = replay(store=OneBadKey(down.store.root))
    assert (report.delivered, report.remaining, report.quarantined) == (2, 1, [])
    assert "a bug on this key only" in report.failed[0] and "kept in" in report.failed[0]
    assert [item.key for item in pending()] == [record(0)[0]]
    assert replay().delivered == 1  # the entry was kept, and a later replay delivers it


def test_entries_earlier_versions_set_aside_as_invalid_are_quarantined(spool: Path) -> None:
    (spool / "invalid").mkdir(parents=True)
    (spool / "invalid" / "old.json").write_text("{half an envel")
    report = replay()
    [item] = report.quarantined
    assert (item.path.name, item.reason) == ("old.json", "unreadable")
    assert item.path.read_text() == "{half an envel"
    assert not (spool / "invalid" / "old.json").exists()


def test_a_retried_entry_that_is_refused_again_goes_back_to_quarantine(
    tmp_path: Path, spool: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    first = deliver(store, *bad_record())
    report = replay(retry_quarantined=True)
    assert (report.released, report.newly_quarantined, report.remaining) == (1, 1, 0)
    [item] = report.quarantined
    assert str(item.path) == first.spool_path and reason_of(item.path)["reason"] == "rejected"
