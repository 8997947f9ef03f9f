"""Open-step entries beside the spool: who owns one, and when a sweeper may take it.

Owners are real processes (a fresh Python that writes an entry and waits, killed with SIGKILL);
sweepers are this process. Nothing of carbonpipe is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from carbonpipe.stores.open_steps import (
    Claim,
    OpenStep,
    claim,
    entries,
    open_dir,
    process_gone,
    process_identity,
    store_reference,
)

_OWNER = textwrap.dedent(
    """
    import os, sys, time
    from carbonpipe.stores.open_steps import OpenStep
    step = OpenStep.create(sys.argv[2], {"note": "owned"}, spool=sys.argv[1])
    if sys.argv[3] == "fork" and os.fork() == 0:
        time.sleep(float(sys.argv[4]))  # forked, not exec'd: it shares the entry's lock
        os._exit(0)
    print("ready", flush=True)
    sys.stdin.readline()
    if sys.argv[3] == "close":
        step.close()
    """
)


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _owner(
    started: list[subprocess.Popen[str]], spool: Path, record_id: str, how: str, *extra: str
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(spool), record_id, how, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    started.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _claim_outcome(path: Path) -> str:
    with claim(path) as claimed:
        return "claimed" if isinstance(claimed, Claim) else claimed


def test_a_running_owners_entry_is_never_claimed_and_a_killed_ones_is(
    tmp_path: Path, owners: list[subprocess.Popen[str]]
) -> None:
    spool = tmp_path / "spool"
    owner = _owner(owners, spool, "step1", "wait")
    [path] = entries(spool)
    assert path == open_dir(spool) / "step1.json"
    entry = json.loads(path.read_text())
    assert entry["note"] == "owned" and entry["owner"]["pid"] == owner.pid
    assert _claim_outcome(path) == "its process is running"

    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    with claim(path) as claimed:
        assert isinstance(claimed, Claim)
        assert claimed.record_id == "step1" and claimed.final is None
        assert _claim_outcome(path) == "locked"  # a second sweeper meanwhile: not twice
        claimed.done()
    assert entries(spool) == []
    assert os.listdir(open_dir(spool)) == []


def test_an_owner_that_stops_normally_leaves_nothing(
    tmp_path: Path, owners: list[subprocess.Popen[str]]
) -> None:
    spool = tmp_path / "spool"
    owner = _owner(owners, spool, "step2", "close")
    assert owner.stdin is not None
    owner.stdin.write("\n")
    owner.stdin.flush()
    assert owner.wait(timeout=10) == 0
    assert os.listdir(open_dir(spool)) == []


def test_a_child_forked_by_a_killed_owner_keeps_sweepers_off_until_it_exits(
    tmp_path: Path, owners: list[subprocess.Popen[str]]
) -> None:
    spool = tmp_path / "spool"
    owner = _owner(owners, spool, "step3", "fork", "2.0")
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    [path] = entries(spool)
    # Its process is gone, but the forked child (still working for the step) holds the lock.
    assert _claim_outcome(path) == "locked"
    deadline = time.monotonic() + 15
    while _claim_outcome(path) == "locked" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _claim_outcome(path) == "claimed"


def test_a_recycled_pid_is_not_mistaken_for_the_owner() -> None:
    me = process_identity()
    assert me["start_ticks"] is not None and me["boot_id"] and me["pid_ns"]
    assert not process_gone(me)
    # The same pid, started at another time: another process now holds the owner's pid.
    assert process_gone({**me, "start_ticks": me["start_ticks"] - 1})
    assert process_gone({**me, "boot_id": "another-boot"})  # the machine rebooted since
    assert process_gone({**me, "pid": 0})


def test_a_step_restarted_under_the_same_record_id_takes_its_entry_over(
    tmp_path: Path, owners: list[subprocess.Popen[str]]
) -> None:
    spool = tmp_path / "spool"
    first = _owner(owners, spool, "step4", "wait")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    (open_dir(spool) / "step4.hb").write_text("{}")  # the dead process's heartbeat
    second = _owner(owners, spool, "step4", "wait")
    [path] = entries(spool)
    assert json.loads(path.read_text())["owner"]["pid"] == second.pid
    assert not (open_dir(spool) / "step4.hb").exists()
    assert _claim_outcome(path) == "its process is running"


def test_entries_keep_no_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from carbonpipe.stores.s3 import S3Store

    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    store = S3Store("bucket", "prefix", endpoint_url="http://user:hunter22@127.0.0.1:9")
    try:
        step = OpenStep.create("step5", store_reference(store), spool=tmp_path)
        step.finishing(store, "records/v1/x.json", b'{"a": 1}')
        written = b"".join(p.read_bytes() for p in open_dir(tmp_path).iterdir())
        step.close()
    finally:
        store.close()
    assert b"hunter22" not in written and secret.encode() not in written
    assert b"127.0.0.1:9" in written  # the endpoint itself is kept, to reopen the store
