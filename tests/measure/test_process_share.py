"""Process mode charges a step its share of what machine mode measures, never more than the machine.

The share arithmetic (:mod:`carbonpipe.measure.share`) is checked by properties; the rest runs the
way a user does: ``carbonpipe run`` subprocesses. The same window is measured in both modes by
nesting: an outer machine-mode ``carbonpipe run`` whose command is one or two process-mode
``carbonpipe run`` steps, so the outer record is the machine's energy over (a little more than)
the inner steps' windows. The machine is shared with other test runs: margins are wide.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonpipe.measure import counters
from carbonpipe.measure.share import (
    Shares,
    StepShares,
    TimeWeightedMean,
    apportion,
    cpu_share,
    fraction,
    ram_share,
)

# -- the arithmetic -------------------------------------------------------------------------------

_seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_maybe = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@given(part=st.floats(allow_nan=True, allow_infinity=True), whole=_maybe)
def test_a_fraction_is_always_between_0_and_1(part: float, whole: float | None) -> None:
    assert 0.0 <= fraction(part, whole) <= 1.0


@given(
    steps=st.lists(_seconds, min_size=1, max_size=8),
    others=_seconds,
    window=st.floats(min_value=0.001, max_value=1e5),
    cpus=st.integers(min_value=1, max_value=256),
)
def test_disjoint_steps_cpu_shares_sum_to_at_most_the_whole(
    steps: list[float], others: float, window: float, cpus: int
) -> None:
    # The machine's busy time holds every step's CPU time (disjoint) and whatever else ran.
    busy = sum(steps) + others
    shares = [cpu_share(s, busy, window_s=window, cpus=cpus) for s in steps]
    assert all(0.0 <= s <= 1.0 for s in shares)
    assert sum(shares) <= 1.0 + 1e-9
    # Without /proc/stat the capacity stands in, which is never less than the busy time.
    capacity = window * cpus
    if busy <= capacity:
        unknown = [cpu_share(s, None, window_s=window, cpus=cpus) for s in steps]
        assert all(u <= s + 1e-12 for u, s in zip(unknown, shares, strict=True))


@given(
    rows=st.lists(
        st.tuples(
            st.floats(min_value=0.001, max_value=100),
            st.lists(st.integers(min_value=0, max_value=2**40), min_size=2, max_size=2),
            st.integers(min_value=0, max_value=2**40),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_concurrent_steps_ram_shares_sum_to_at_most_the_whole(
    rows: list[tuple[float, list[int], int]],
) -> None:
    # Two steps sampled at the same times; used memory holds both steps' RSS and more.
    means = [TimeWeightedMean(0.0), TimeWeightedMean(0.0)]
    at = 0.0
    for dt, rss, rest in rows:
        at += dt
        used = sum(rss) + rest
        for mean, step_rss in zip(means, rss, strict=True):
            mean.add(at, ram_share(step_rss, used))
    values = [m.mean for m in means]
    assert all(v is not None and 0.0 <= v <= 1.0 + 1e-12 for v in values)
    assert sum(v or 0.0 for v in values) <= 1.0 + 1e-9


@given(
    energy=st.fixed_dictionaries(
        {p: st.floats(min_value=0, max_value=1e3) for p in ("cpu", "gpu", "ram")}
    ),
    cpu=_maybe,
    ram=_maybe,
)
def test_a_share_of_the_energy_never_exceeds_the_energy(
    energy: dict[str, float], cpu: float | None, ram: float | None
) -> None:
    shares = Shares(
        cpu=None if cpu is None else fraction(cpu, 1.0),
        ram=None if ram is None else fraction(ram, 1.0),
    )
    charged = apportion(energy, shares)
    assert charged["gpu"] == energy["gpu"]
    for part in ("cpu", "ram"):
        assert 0.0 <= charged[part] <= energy[part]


def test_step_shares_follow_the_samples() -> None:
    # 100 Hz ticks; the machine was busy 4 s of the 2 s window (2 CPUs), the step 1 s of it.
    shares = StepShares(10.0, (0, 0, 0, 0), 100, 2)
    shares.add(11.0, step_cpu_s=0.5, stat=(200, 0, 0, 0), rss_bytes=100, used_bytes=1000)
    shares.add(12.0, step_cpu_s=1.0, stat=(400, 0, 0, 0), rss_bytes=300, used_bytes=1000)
    got = shares.shares()
    assert got.cpu == 0.25
    assert got.ram == pytest.approx(0.2)  # 0.1 held for 1 s, then 0.3 for 1 s


# -- whose cgroup ---------------------------------------------------------------------------------


def test_a_cgroup_holding_only_the_step_is_its_own_and_one_shared_is_not(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    # A process outside this one's tree: its shell exits at once, leaving it to init.
    outsider = int(
        subprocess.run(
            ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    try:
        cgroup = tmp_path / "cgroup"
        (cgroup / "sub").mkdir(parents=True)
        (cgroup / "cgroup.procs").write_text(f"{os.getppid()}\n{os.getpid()}\n")
        (cgroup / "sub" / "cgroup.procs").write_text(f"{child.pid}\n")
        assert counters.cgroup_not_own(str(cgroup), pid=os.getpid()) is None

        (cgroup / "sub" / "cgroup.procs").write_text(f"{child.pid}\n{outsider}\n")
        why = counters.cgroup_not_own(str(cgroup), pid=os.getpid())
        assert why is not None and f"pid {outsider}" in why and "shared" in why
    finally:
        child.kill()
        child.wait()
        os.kill(outsider, signal.SIGKILL)


def test_the_root_cgroup_is_never_charged_as_the_step(tmp_path: Path) -> None:
    if not counters._in_root_cgroup():
        pytest.skip("this process is not in the machine's root cgroup")
    record = _run_step(tmp_path, "process", _step(10, 0.1), name="alone")
    assert record["measurement"]["share"] == "process"
    share, path, why = counters.choose_share("process", "cgroup")
    assert (share, path) == ("process", None)
    assert why is not None and "root cgroup" in why


# -- carbonpipe run: the same window in both modes ------------------------------------------------

_STEP = textwrap.dedent(
    """
    import sys, time
    held = bytearray(int(float(sys.argv[1]) * 2**20))
    for i in range(0, len(held), 4096):
        held[i] = 1  # touch every page: resident
    end = time.process_time() + float(sys.argv[2])
    while time.process_time() < end:
        pass
    """
)


def _step(megabytes: float, cpu_s: float) -> list[str]:
    return [sys.executable, "-c", _STEP, str(megabytes), str(cpu_s)]


def _carbonpipe_run(tmp_path: Path, mode: str, name: str, cmd: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "carbonpipe",
        "run",
        "--project",
        "share",
        "--store",
        str(tmp_path / "store"),
        "--provider",
        "gcp",
        "--region",
        "europe-west1",
        "--tracking-mode",
        mode,
        "--step",
        name,
        "--record-json",
        str(tmp_path / f"{name}.json"),
        "--",
        *cmd,
    ]


def _run_step(tmp_path: Path, mode: str, cmd: list[str], *, name: str) -> dict[str, Any]:
    done = subprocess.run(
        _carbonpipe_run(tmp_path, mode, name, cmd), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return _record(tmp_path, name)


def _record(tmp_path: Path, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    return record


def _nested(tmp_path: Path, inner: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """An outer machine-mode step running the ``inner`` process-mode steps at the same time."""
    commands = [_carbonpipe_run(tmp_path, "process", name, cmd) for name, cmd in inner.items()]
    launcher = (
        "import subprocess, sys, json\n"
        f"procs = [subprocess.Popen(c) for c in json.loads({json.dumps(json.dumps(commands))})]\n"
        "sys.exit(max(p.wait() for p in procs))\n"
    )
    records = {
        "machine": _run_step(tmp_path, "machine", [sys.executable, "-c", launcher], name="machine")
    }
    for name in inner:
        records[name] = _record(tmp_path, name)
        assert records[name]["measurement"]["tracking_mode"] == "process"
        assert records[name]["measurement"]["share"] in ("process", "cgroup")
    return records


def _power(record: dict[str, Any], part: str) -> float:
    return float(record["energy_kwh"][part]) * 3.6e6 / float(record["duration_s"])


def test_a_busy_step_is_charged_no_more_than_the_machine_in_the_same_window(
    tmp_path: Path,
) -> None:
    records = _nested(tmp_path, {"busy": _step(10, 1.5)})
    machine, step = records["machine"]["energy_kwh"], records["busy"]["energy_kwh"]

    assert 0 < step["cpu"] <= machine["cpu"] * 1.2
    assert 0 < step["ram"] < machine["ram"]


def test_two_concurrent_steps_are_charged_together_at_most_the_machine(tmp_path: Path) -> None:
    records = _nested(tmp_path, {"small": _step(10, 1.5), "large": _step(300, 1.5)})
    machine = records["machine"]["energy_kwh"]
    small, large = records["small"]["energy_kwh"], records["large"]["energy_kwh"]

    assert small["cpu"] > 0 and large["cpu"] > 0
    assert small["cpu"] + large["cpu"] <= machine["cpu"] * 1.2
    assert small["ram"] + large["ram"] < machine["ram"]
    # Sampled in the same window, against the same used memory: 300 MB is charged more RAM.
    assert _power(records["large"], "ram") > _power(records["small"], "ram") * 1.5


def test_a_step_beside_an_untracked_busy_process_is_charged_about_its_own_share(
    tmp_path: Path,
) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        records = _nested(tmp_path, {"beside": _step(10, 1.5)})
    finally:
        busy.kill()
        busy.wait()
    machine, step = records["machine"]["energy_kwh"], records["beside"]["energy_kwh"]

    # The other process kept a core busy all along: the step used at most about half the CPU.
    # Not nothing either (under heavy load from other jobs its share can be small).
    assert 0.02 * machine["cpu"] < step["cpu"] <= 0.75 * machine["cpu"]
