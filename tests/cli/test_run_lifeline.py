"""``carbonpipe run`` under faults: its command dies with it, its step is not lost, and as PID 1
it reaps orphans. Real subprocesses, real SIGKILL and SIGTERM, a real PID namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.measure.heartbeat import read_heartbeat
from carbonpipe.record import Record, make_record_id
from carbonpipe.report import read_records, record_keys
from carbonpipe.stores.open_steps import open_dir

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]


def _records(store: Path) -> list[Record]:
    s = open_store(str(store))
    return list(read_records(s, record_keys(s)))


def _flush() -> dict:
    out = subprocess.run(CLI + ["flush", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _children_of(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        fields = _stat(int(name)) if name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(name))
    return found


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fields = _stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _killed_wrapper(tmp_path: Path, run_id: str) -> tuple[str, float, Path]:
    """Start a 3 s step under ``carbonpipe run``, SIGKILL the wrapper after about a second."""
    marker = tmp_path / f"{run_id}.marker"
    command = f"import time; time.sleep(3); open({str(marker)!r}, 'w').close()"
    wrapper = subprocess.Popen(
        CLI
        + ["run", "--project", "P", "--step", "train", "--run-id", run_id]
        + ["--store", str(tmp_path / "store"), *WHERE, "--", sys.executable, "-c", command],
        env={**os.environ, "CARBONPIPE_MEASURE_POWER_SECS": "0.5"},
    )
    record_id = make_record_id("P", "P", run_id, "train", 1)
    deadline = time.monotonic() + 30
    while (read_heartbeat(open_dir() / f"{record_id}.hb") or {}).get("beat", 0) < 2:
        assert time.monotonic() < deadline and wrapper.poll() is None, "the step never started"
        time.sleep(0.05)
    [command_pid] = [p for p in _children_of(wrapper.pid) if b"sleep(3)" in _cmdline(p)]
    wrapper.send_signal(signal.SIGKILL)
    killed_at = time.time()
    wrapper.wait(timeout=10)
    # With the wrapper gone, the command would run on unaccounted: it gets SIGKILL too.
    assert _gone_within(command_pid, 2.0)
    return record_id, killed_at, marker


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_killed_wrapper_takes_its_command_along_and_flush_records_the_step_as_lost(
    tmp_path: Path,
) -> None:
    record_id, killed_at, marker = _killed_wrapper(tmp_path, "run-k")
    time.sleep(max(0.0, killed_at + 3.5 - time.time()))
    assert not marker.exists()  # the command did not live to write it

    flushed = _flush()
    assert flushed["lost_steps"]["lost"] == 1 and flushed["lost_steps"]["record_ids"] == [record_id]
    [rec] = _records(tmp_path / "store")
    assert (rec.record_id, rec.status, rec.step) == (record_id, "lost", "train")
    assert rec.energy_kwh["total"] > 0
    ended = datetime.fromisoformat(rec.ended_at).timestamp()
    assert killed_at - 2.0 < ended < killed_at + 2.0  # the last heartbeat, as the wrapper died
    assert rec.location["region"] == "europe-west1"
    assert rec.tracking_errors[0].startswith("step lost:")

    again = _flush()
    assert again["lost_steps"]["lost"] == 0 and again["delivered"] == 0
    assert len(_records(tmp_path / "store")) == 1


def test_the_next_carbonpipe_run_records_a_step_whose_wrapper_was_killed(tmp_path: Path) -> None:
    record_id, _, _ = _killed_wrapper(tmp_path, "run-a")
    time.sleep(0.5)  # the sidecar's last heartbeat
    out = subprocess.run(
        CLI
        + ["run", "--project", "P", "--step", "train", "--run-id", "run-b"]
        + ["--store", str(tmp_path / "store"), *WHERE, "--", sys.executable, "-c", "pass"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    records = sorted((r.status, r.record_id) for r in _records(tmp_path / "store"))
    assert records == [
        ("lost", record_id),
        ("succeeded", make_record_id("P", "P", "run-b", "train", 1)),
    ]
    assert _flush()["lost_steps"]["lost"] == 0


# -- as PID 1 ---------------------------------------------------------------------------------
NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc"]


@pytest.fixture
def pid_namespace() -> list[str]:
    """The command line prefix that runs a program as PID 1 of a fresh PID namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run([*NAMESPACE, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"a new PID namespace is not permitted here: {probe.stderr.strip()}")
    return NAMESPACE


_ORPHANS = textwrap.dedent(
    """
    import os, subprocess, sys, time
    for _ in range(5):  # each sh exits at once; its sleep is re-parented to PID 1
        subprocess.run(["sh", "-c", "sleep 0.2 &"], check=True)
    time.sleep(1.5)
    zombies = 0
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as fh:
                zombies += fh.read().rpartition(")")[2].split()[0] == "Z"
        except (OSError, IndexError):
            pass
    print(zombies, os.getppid(), flush=True)
    sys.exit(7)
    """
)


def test_as_pid_1_the_wrapper_reaps_orphans_and_keeps_the_commands_exit_code(
    tmp_path: Path, pid_namespace: list[str]
) -> None:
    out = subprocess.run(
        [*pid_namespace, *CLI, "run", "--store", str(tmp_path / "store"), *WHERE, "--"]
        + [sys.executable, "-c", _ORPHANS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 7, out.stderr  # the command's own status, not stolen by the reaper
    zombies, parent = out.stdout.split()
    assert parent == "1"  # the wrapper is PID 1 of the namespace
    assert zombies == "0"
    [rec] = _records(tmp_path / "store")
    assert rec.status == "failed" and rec.energy_kwh["total"] > 0
    assert not rec.tracking_errors  # the sidecar's exit was its meter's to see, not the reaper's


def test_as_pid_1_the_wrapper_still_forwards_sigterm(
    tmp_path: Path, pid_namespace: list[str]
) -> None:
    command = "import time; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [*pid_namespace, *CLI, "run", "--store", str(tmp_path / "store"), *WHERE, "--"]
        + [sys.executable, "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    [wrapper] = _children_of(proc.pid)  # PID 1 inside, an ordinary pid out here
    os.kill(wrapper, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    [rec] = _records(tmp_path / "store")
    assert rec.status == "killed"
