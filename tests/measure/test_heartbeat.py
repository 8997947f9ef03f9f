"""The sidecar's heartbeat and its watch on the step's process: real sidecars, real kills.

A step's process is a fresh Python subprocess that starts a :class:`Meter` with a heartbeat file;
the test kills it with SIGKILL, or lets it fork a child that keeps the sidecar's pipe open, and
reads what the sidecar left on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from carbonpipe.measure.heartbeat import HEARTBEAT_SCHEMA, heartbeat_measurement, read_heartbeat
from carbonpipe.measure.meter import Meter


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` is gone, or a zombie (exited, not yet reaped), within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _wait_for(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_the_sidecar_rewrites_the_heartbeat_as_it_measures(tmp_path: Path) -> None:
    path = tmp_path / "step.hb"
    meter = Meter(tracking_mode="machine", measure_power_secs=0.3, heartbeat_path=path)
    meter.start()
    try:
        assert _wait_for(lambda: (read_heartbeat(path) or {}).get("beat", 0) >= 3, 30.0)
        first = read_heartbeat(path)
        assert _wait_for(lambda: read_heartbeat(path)["beat"] > first["beat"], 10.0)  # type: ignore[index]
        later = read_heartbeat(path)
    finally:
        final = meter.stop()
    assert first is not None and later is not None
    assert first["schema"] == HEARTBEAT_SCHEMA and not first["owner_gone"]
    assert later["until_s"] > first["until_s"]
    for part in ("cpu", "gpu", "ram"):
        assert later["energy_kwh"][part] >= first["energy_kwh"][part] >= 0
    assert later["energy_kwh"]["ram"] > 0
    # The heartbeat is the measurement so far, on the step's own window: it opens at start()
    # and never holds more than the final measurement.
    so_far = heartbeat_measurement(later)
    assert so_far.started_at == final.started_at
    assert so_far.ended_at <= final.ended_at
    assert 0 < so_far.total_energy_kwh <= final.total_energy_kwh
    assert so_far.method == final.method
    assert final.errors == ()
    # Both carry the energy profile: an interval per measurement, summing to the total.
    for m in (so_far, final):
        assert len(m.energy_profile) >= 3, m.energy_profile
        assert sum(kwh for _, kwh in m.energy_profile) == pytest.approx(m.total_energy_kwh)
        assert [o for o, _ in m.energy_profile] == sorted({o for o, _ in m.energy_profile})


_STEP = textwrap.dedent(
    """
    import os, sys, time
    from carbonpipe.measure.meter import Meter
    meter = Meter(tracking_mode=sys.argv[2], measure_power_secs=0.5, heartbeat_path=sys.argv[1])
    meter.start()
    if sys.argv[3] == "fork" and os.fork() == 0:
        time.sleep(20)  # a forked child: it holds the sidecar's stdin pipe as long as it lives
        os._exit(0)
    print(meter.sidecar_pid, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize(
    "mode", [pytest.param("machine", id="machine"), pytest.param("process", id="process")]
)
def test_a_step_killed_with_sigkill_leaves_a_last_heartbeat(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "step.hb"
    step = subprocess.Popen(
        [sys.executable, "-c", _STEP, str(path), mode, "plain"], stdout=subprocess.PIPE, text=True
    )
    assert step.stdout is not None
    sidecar = int(step.stdout.readline())
    assert _wait_for(lambda: (read_heartbeat(path) or {}).get("beat", 0) >= 2, 30.0)
    step.send_signal(signal.SIGKILL)
    killed_at = time.time()
    step.wait(timeout=10)

    assert _gone_within(sidecar, 10.0)
    last = read_heartbeat(path)
    assert last is not None
    m = heartbeat_measurement(last)
    assert m.total_energy_kwh > 0
    if mode == "machine":
        # A last sample as the step died: the window ends at its death, not a period earlier.
        assert last["owner_gone"] is True
        assert abs(last["until_s"] - killed_at) < 2.0
    else:
        # The step's process tree is gone: the last heartbeat is the last periodic one.
        assert killed_at - 2.0 < last["until_s"] <= killed_at + 0.5
    assert not list(tmp_path.glob("*.tmp"))  # every write was a whole file


def test_the_sidecar_exits_with_its_step_though_a_forked_child_holds_its_pipe(
    tmp_path: Path,
) -> None:
    path = tmp_path / "step.hb"
    step = subprocess.Popen(
        [sys.executable, "-c", _STEP, str(path), "machine", "fork"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert step.stdout is not None
    sidecar = int(step.stdout.readline())
    assert _wait_for(lambda: read_heartbeat(path) is not None, 30.0)
    children = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _ppid(int(p)) == step.pid and int(p) != sidecar
    ]
    assert children, "the step forked no child"
    step.send_signal(signal.SIGKILL)
    step.wait(timeout=10)
    try:
        # The forked child (20 s) still holds the write end of the sidecar's stdin.
        assert all(not _gone_within(child, 0.1) for child in children)
        assert _gone_within(sidecar, 5.0)
        assert json.loads(path.read_text())["owner_gone"] is True
    finally:
        for child in children:
            os.kill(child, signal.SIGKILL)


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None
