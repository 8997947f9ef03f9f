"""``carbonpipe flush`` as users run it: a real subprocess over a real spool and real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.spool import deliver, spool_dir
from tests.fault_proxy import FaultProxy, Flaky, s3_store_at

CLI = [sys.executable, "-m", "carbonpipe"]
TOO_LONG = "p" * 300  # no filesystem takes a 300-character folder name


def _flush(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "flush", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def _record(i: int, pipeline: str = "train") -> tuple[str, bytes]:
    key = f"records/v1/date=2026-11-24/pipeline={pipeline}/{i:04d}-entry.json"
    return key, json.dumps({"record_id": f"{i:04d}"}).encode()


def _spool_bad_then_good(store: Any, bad_pipeline: str) -> str:
    """Spool one entry the store will refuse, oldest, then two good ones; return the bad key."""
    bad_key, bad_data = _record(0, bad_pipeline)
    bad = deliver(store, bad_key, bad_data)
    assert bad.spooled and bad.spool_path is not None
    os.utime(bad.spool_path, ns=(1_000_000_000, 1_000_000_000))  # first in replay order
    for i in (1, 2):
        assert deliver(store, *_record(i)).spooled
    return bad_key


def test_flush_delivers_the_good_entries_behind_one_the_local_store_refuses(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be: the store is down")
    store = LocalStore(blocker / "store")
    bad_key = _spool_bad_then_good(store, TOO_LONG)
    blocker.unlink()  # the store is back

    first = _flush()

    assert first.returncode == 1, first.stderr
    assert "delivered 2, duplicates 0, remaining 0" in first.stdout
    assert [store.get(_record(i)[0]).data for i in (1, 2)] == [_record(i)[1] for i in (1, 2)]
    quarantine = spool_dir() / "quarantine"
    [entry] = [p for p in quarantine.iterdir() if not p.name.endswith(".reason.json")]
    assert "quarantined 1" in first.stdout and f"rejected: {entry}" in first.stdout
    why = json.loads((quarantine / f"{entry.name}.reason.json").read_text())
    assert (why["reason"], why["key"], why["store"]) == ("rejected", bad_key, store.uri)
    assert "File name too long" in why["error"] and why["quarantined_at"]

    # Flushing again changes nothing and still says so: nothing is dropped or hidden.
    again = _flush("--json")
    assert again.returncode == 1
    data = json.loads(again.stdout)
    assert (data["delivered"], data["remaining"], data["quarantined"]) == (0, 0, 1)
    assert data["quarantine"][0]["path"] == str(entry)
    assert data["quarantine"][0]["reason"] == "rejected"

    # A retry that meets the same refusal puts the entry back, with a fresh reason.
    retried = _flush("--retry-quarantined", "--json")
    assert retried.returncode == 1
    data = json.loads(retried.stdout)
    assert (data["released"], data["delivered"], data["quarantined"]) == (1, 0, 1)
    assert (quarantine / f"{entry.name}.reason.json").exists()


@pytest.fixture
def flaky_s3(
    s3_store: Any, s3_endpoint: str, fault_proxy: Callable[..., FaultProxy]
) -> Iterator[Flaky]:
    """An S3 store (moto) behind a fault proxy, and the same bucket reached directly."""
    proxy = fault_proxy(s3_endpoint, "s3")
    yield Flaky(backend="s3", store=s3_store_at(proxy.url, s3_store), direct=s3_store, proxy=proxy)


def test_flush_quarantines_an_s3_400_and_retry_quarantined_delivers_it_once_fixed(
    flaky_s3: Flaky,
) -> None:
    flaky_s3.proxy.down()
    bad_key = _spool_bad_then_good(flaky_s3.store, "train")
    flaky_s3.proxy.fail(400, code="KeyTooLongError", match="0000-entry")

    first = _flush("--json")

    assert first.returncode == 1, first.stderr
    data = json.loads(first.stdout)
    assert (data["delivered"], data["remaining"], data["quarantined"]) == (2, 0, 1)
    [item] = data["quarantine"]
    assert (item["reason"], item["key"], item["store"]) == ("rejected", bad_key, flaky_s3.store.uri)
    assert "KeyTooLongError" in item["error"] and Path(item["reason_file"]).is_file()
    assert sorted(flaky_s3.direct.list("records/")) == [_record(i)[0] for i in (1, 2)]

    flaky_s3.proxy.up()
    plain = _flush()
    assert plain.returncode == 1 and "quarantined 1" in plain.stdout  # not retried unasked
    retried = _flush("--retry-quarantined")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "delivered 1, duplicates 0, remaining 0" in retried.stdout
    assert flaky_s3.direct.get(bad_key).data == _record(0, "train")[1]
    assert list((spool_dir() / "quarantine").iterdir()) == []


def test_flush_keeps_everything_pending_while_the_store_is_down(flaky_s3: Flaky) -> None:
    flaky_s3.proxy.down()
    for i in range(3):
        assert deliver(flaky_s3.store, *_record(i)).spooled

    out = _flush("--json")

    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert (data["delivered"], data["remaining"], data["quarantined"]) == (0, 3, 0)
    assert len(data["failed"]) == 1  # one message for the store, none per entry
    assert not (spool_dir() / "quarantine").exists()
    assert len(list((spool_dir() / "pending").glob("*.json"))) == 3
