"""Tests for carbonpipe.measure.meter: real sidecar processes, real CodeCarbon, failures injected from outside.

Process mode charges a step its share of machine mode's energy (see carbonpipe.measure.share):
the machine's CPU energy is at least CodeCarbon's floor (10 % of TDP) over the window and the
step's share at least its CPU time over the machine's capacity, so a step that used ``c`` CPU
seconds is charged at least ``0.1 x c x TDP / cpu_count`` joules, and at most the TDP over the
window. A test burns a known amount of CPU time and checks both bounds. Nothing of carbonpipe is mocked; failures come from a fake
``codecarbon`` package first on the sidecar's PYTHONPATH, a killed sidecar, or a bad cache folder.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from carbonpipe.measure import hwprofile
from carbonpipe.measure import sidecar as _meter
from carbonpipe.measure.base import Measurement
from carbonpipe.measure.estimate import _ram_power_w, estimate_without_meter
from carbonpipe.measure.meter import Meter

J_PER_KWH = 3.6e6


def _burn_cpu(seconds: float) -> None:
    """Spend ``seconds`` of this process's CPU time in pure Python (holding the GIL throughout)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _exits_within(pid: int, seconds: float) -> bool:
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


def _joules(kwh: float) -> float:
    return kwh * J_PER_KWH


def _assert_charged_for(m: Measurement, cpu_s: float, watts_per_busy_core: float) -> None:
    """The process-mode CPU energy of a step that used ``cpu_s`` CPU seconds is within its bounds."""
    floor = 0.1 * watts_per_busy_core * cpu_s * 0.9  # 0.9: CPU time is counted in 10 ms ticks
    ceiling = watts_per_busy_core * (os.cpu_count() or 1) * m.duration_s
    assert floor <= _joules(m.cpu_energy_kwh) <= ceiling


def _assert_consistent(m: Measurement) -> None:
    assert m.started_at.tzinfo is not None
    assert m.ended_at >= m.started_at
    assert (m.ended_at - m.started_at).total_seconds() == pytest.approx(m.duration_s, abs=1e-3)
    for part in ("cpu", "gpu", "ram"):
        energy = getattr(m, f"{part}_energy_kwh")
        power = getattr(m, f"{part}_power_w")
        assert math.isfinite(energy) and energy >= 0
        assert _joules(energy) == pytest.approx(power * m.duration_s, rel=1e-6, abs=1e-9)
    assert m.total_energy_kwh == pytest.approx(
        m.cpu_energy_kwh + m.gpu_energy_kwh + m.ram_energy_kwh
    )


def _measure(
    meter: Meter, step_seconds: float = 0.0, *, burn: float = 0.0
) -> tuple[Measurement, float]:
    """Run a step (burn CPU, then sleep) under ``meter``; return the measurement and the CPU used.

    Whatever happened, the measured window must cover the whole step (from start() returning to
    stop() being called) and no more than the time spent in start(), the step and stop().
    """
    cpu0, outer0 = _own_cpu_s(), time.perf_counter()
    meter.start()
    inner0 = time.perf_counter()
    _burn_cpu(burn)
    time.sleep(step_seconds)
    inner1, cpu1 = time.perf_counter(), _own_cpu_s()
    measurement = meter.stop()
    outer1 = time.perf_counter()
    assert inner1 - inner0 <= measurement.duration_s <= outer1 - outer0
    return measurement, cpu1 - cpu0


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding both hardware profiles, made by the public warm-up in a fresh process."""
    folder = tmp_path_factory.mktemp("carbonpipe-cache")
    code = "import sys; from carbonpipe.measure.meter import warm_hardware_profile as w; print(*w(cache_dir=sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    assert len(done.stdout.split()) == 2
    return folder


@pytest.fixture
def cache(warm_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(warm_cache))
    return warm_cache


@pytest.fixture
def watts_per_busy_core(warm_cache: Path) -> float:
    """CodeCarbon's process-mode power for one fully busy core on this machine (TDP / CPU count)."""
    tdp = hwprofile.find_cpu_tdp_w(warm_cache)
    assert tdp is not None
    return tdp / (os.cpu_count() or 1)


@pytest.fixture
def broken_codecarbon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake ``codecarbon`` package placed first on the sidecar's PYTHONPATH; tests write its body."""
    package = tmp_path / "fake" / "codecarbon"
    package.mkdir(parents=True)
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(package.parent), existing) if p)
    )
    yield package / "__init__.py"


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", [pytest.param("offline", id="offline"), pytest.param("Process", id="case")]
)
def test_meter_rejects_unknown_tracking_mode_naming_the_accepted_ones(mode: str) -> None:
    with pytest.raises(ValueError, match=r"tracking_mode must be one of 'machine', 'process'"):
        Meter(tracking_mode=mode)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"share": "container"}, ValueError, id="share"),
        pytest.param({"measure_power_secs": 0}, ValueError, id="zero-interval"),
        pytest.param({"measure_power_secs": "15"}, TypeError, id="text-interval"),
        pytest.param({"stop_timeout_s": math.inf}, ValueError, id="infinite-timeout"),
    ],
)
def test_meter_rejects_bad_arguments_by_name(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error, match=next(iter(kwargs))):
        Meter(**kwargs)  # type: ignore[arg-type]


def test_importing_measure_does_not_import_codecarbon_psutil_or_pandas() -> None:
    code = "import sys, carbonpipe.measure.meter; print([m for m in ('codecarbon', 'psutil', 'pandas') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- the window ---------------------------------------------------------------------------------


def test_work_done_before_the_sidecar_is_ready_is_measured(
    cache: Path, watts_per_busy_core: float
) -> None:
    meter = Meter(tracking_mode="process", share="process")
    m, cpu = _measure(meter, 0.6, burn=0.3)

    # All CPU work happened in the first 0.3 s: had the window begun when CodeCarbon did, it
    # would have seen little of it.
    assert meter.diagnostics["window_lag_s"] > 0
    assert (m.method, m.tracking_mode, m.share, m.errors) == ("cpu_load", "process", "process", ())
    _assert_charged_for(m, cpu, watts_per_busy_core)
    _assert_consistent(m)


def test_two_second_pure_python_step_is_measured_whole(
    cache: Path, watts_per_busy_core: float
) -> None:
    m, cpu = _measure(Meter(tracking_mode="process", share="process"), burn=2.0)

    _assert_charged_for(m, cpu, watts_per_busy_core)
    assert m.ram_power_w > 0
    _assert_consistent(m)


def test_step_that_ends_before_the_sidecar_is_ready_still_gets_its_window(
    tmp_path: Path, watts_per_busy_core: float
) -> None:
    # An empty cache: the sidecar detects hardware for ~2 s, long after this step is over.
    meter = Meter(tracking_mode="process", share="process", cache_dir=tmp_path)
    m, cpu = _measure(meter, burn=0.05)

    assert meter.diagnostics["window_lag_s"] > m.duration_s
    assert m.method == "cpu_load"
    _assert_charged_for(m, max(cpu - 0.02, 0.0), watts_per_busy_core)
    assert m.ram_energy_kwh > 0
    _assert_consistent(m)


def test_prepared_sidecar_is_ready_at_start_and_the_window_still_begins_there(
    cache: Path, watts_per_busy_core: float
) -> None:
    meter = Meter(tracking_mode="process", share="process")
    meter.prepare()
    time.sleep(0.8)  # the work a step does before its body: gate, detection, loading
    m, cpu = _measure(meter, burn=0.1)

    # CodeCarbon was waiting: it started right after start(), not a cold start later.
    assert meter.diagnostics["window_lag_s"] < 0.25
    assert m.method == "cpu_load"
    _assert_charged_for(m, max(cpu - 0.02, 0.0), watts_per_busy_core)


def test_prepared_but_never_started_meter_lets_its_sidecar_go(cache: Path) -> None:
    meter = Meter(tracking_mode="machine")
    meter.prepare()
    pid = meter.sidecar_pid
    m = meter.stop()

    assert m.method == "estimate"
    assert any("before start()" in e for e in m.errors)
    assert pid is not None and _exits_within(pid, 5.0)


# -- what is charged ----------------------------------------------------------------------------


def test_process_mode_leaves_the_sidecars_own_cpu_out(cache: Path) -> None:
    machine = Meter(tracking_mode="machine")
    machine.prepare()
    time.sleep(1.0)  # its start-up done, not in the window below
    machine.start()
    meter = Meter(tracking_mode="process", share="process")
    m, _ = _measure(meter, 0.6)
    whole = machine.stop()

    # The sidecar spent a tenth of a second or more of CPU starting up; the idle step did not,
    # so the step's share of the machine is a small part of it.
    assert meter.diagnostics["sidecar_cpu_s"] > 0.05
    assert m.cpu_energy_kwh <= 0.35 * whole.cpu_energy_kwh


def test_process_mode_charges_children_the_step_ran(
    cache: Path, watts_per_busy_core: float
) -> None:
    child = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    meter = Meter(tracking_mode="process", share="process")
    meter.start()
    before = os.times()
    subprocess.run([sys.executable, "-c", child], check=True)
    after = os.times()
    m = meter.stop()

    child_cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    assert child_cpu >= 0.4
    _assert_charged_for(m, child_cpu, watts_per_busy_core)


def test_machine_mode_charges_the_machine_even_when_the_step_idles(cache: Path) -> None:
    m, _ = _measure(Meter(tracking_mode="machine"), 0.5)

    assert (m.method, m.tracking_mode, m.share) == ("cpu_load", "machine", "machine")
    assert m.codecarbon_version and m.cpu_model
    assert m.cpu_energy_kwh > 0  # CodeCarbon's floor is 10 % of TDP
    # No GPU here: the GPU path stays out of the way.
    assert (m.gpu_energy_kwh, m.gpu_power_w, m.gpu_model) == (0.0, 0.0, None)
    _assert_consistent(m)


def test_the_sidecar_reads_the_host_facts_off_the_steps_stop_path(cache: Path) -> None:
    """platform.platform() runs ``uname -p`` and scans the Python binary: the sidecar does it."""
    from carbonpipe.measure.host import host_facts

    m, _ = _measure(Meter(tracking_mode="machine"), 0.2)

    assert m.host == host_facts()  # the same machine, the same Python binary
    assert m.host["os"] and m.host["cpu_count"] == os.cpu_count()
    # And what the step could use, read in its cgroup with its environment.
    from carbonpipe.measure.resources import step_resources

    assert m.resources == step_resources("machine")


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"os": "Linux"},
        {"os": "x" * 201, "python_version": "3.11", "cpu_count": 2, "ram_total_size_gib": 1.0},
        {"os": "Linux", "python_version": "3.11", "cpu_count": True, "ram_total_size_gib": 1.0},
        {"os": "Linux", "python_version": "3.11", "cpu_count": 2, "ram_total_size_gib": 1e300},
        {"os": "L", "python_version": "3", "cpu_count": 2, "ram_total_size_gib": 1, "extra": 1},
    ],
)
def test_host_facts_of_an_odd_shape_from_the_sidecar_are_not_used(raw: object) -> None:
    from carbonpipe.measure.host import checked_host

    assert checked_host(raw) is None


_RESOURCES = {
    "cpus": None,
    "cpus_from": "instance",
    "gpus": None,
    "host_cpus": 8,
    "host_gpus": 0,
    "sockets": 1,
}


@pytest.mark.parametrize(
    "change",
    [
        {"cpus": -1.0},
        {"cpus": True},
        {"cpus": float("inf")},
        {"cpus_from": "elsewhere"},
        {"gpus": 1.5},
        {"host_cpus": 0},
        {"host_gpus": -1},
        {"sockets": "1"},
        {"extra": 1},
    ],
)
def test_resources_of_an_odd_shape_from_a_sidecar_or_heartbeat_are_not_used(
    change: dict[str, object],
) -> None:
    from carbonpipe.measure.resources import checked_resources

    assert checked_resources(_RESOURCES) == _RESOURCES
    assert checked_resources({**_RESOURCES, **change}) is None
    assert checked_resources([_RESOURCES]) is None


def test_cgroup_share_is_used_when_asked_and_readable(cache: Path) -> None:
    m, _ = _measure(Meter(tracking_mode="process", share="cgroup"), 0.2, burn=0.1)

    if m.share != "cgroup":
        assert any("cgroup" in e for e in m.errors)
        pytest.skip("no cgroup of the step's own here (unreadable, the root cgroup, or shared)")
    assert m.method == "cpu_load"
    assert m.cpu_energy_kwh > 0
    _assert_consistent(m)


# -- the hardware profile cache -----------------------------------------------------------------


def test_warm_up_writes_one_profile_per_tracking_mode(warm_cache: Path) -> None:
    documents = [json.loads(p.read_text()) for p in sorted((warm_cache / "hw").glob("*.json"))]

    assert sorted(d["key"]["tracking_mode"] for d in documents) == ["machine", "process"]
    assert {d["schema"] for d in documents} == {hwprofile.PROFILE_SCHEMA}


def test_profile_is_saved_by_the_first_step_and_reused_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(tmp_path))
    first = Meter(tracking_mode="machine")
    m1, _ = _measure(first)
    second = Meter(tracking_mode="machine")
    m2, _ = _measure(second)

    assert [p.parent.name for p in tmp_path.glob("hw/*.json")] == ["hw"]
    assert (first.diagnostics["profile"], second.diagnostics["profile"]) == ("detected", "cache")
    assert second.diagnostics["window_lag_s"] < first.diagnostics["window_lag_s"]
    assert (m1.method, m2.method, m1.errors, m2.errors) == ("cpu_load", "cpu_load", (), ())


def test_cache_dir_argument_wins_over_the_environment(
    warm_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(tmp_path / "elsewhere"))
    meter = Meter(tracking_mode="machine", cache_dir=warm_cache)
    _measure(meter)

    assert meter.diagnostics["profile"] == "cache"
    assert not (tmp_path / "elsewhere").exists()


def test_corrupt_profile_is_reported_and_replaced(
    warm_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hw").mkdir()
    for profile in warm_cache.glob("hw/*.json"):
        (tmp_path / "hw" / profile.name).write_text('{"schema": "carbonpipe.hwprofile/1", "key": ')
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(tmp_path))
    meter = Meter(tracking_mode="process", share="process")
    m, _ = _measure(meter)

    assert m.method == "cpu_load"
    assert meter.diagnostics["profile"] == "detected"
    assert any("hardware profile" in e and "not valid JSON" in e for e in m.errors)
    # The process-mode profile was healed; the machine-mode one waits for a machine-mode step.
    texts = [p.read_text() for p in tmp_path.glob("hw/*.json")]
    healed = [json.loads(t) for t in texts if t.endswith("}")]
    assert [d["key"]["tracking_mode"] for d in healed] == ["process"]


def test_unwritable_cache_dir_still_measures_with_codecarbon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(not_a_dir))
    m, _ = _measure(Meter(tracking_mode="machine"))

    assert m.method == "cpu_load"
    assert any("could not save the hardware profile" in e for e in m.errors)


# -- failures: tracking never breaks the step ---------------------------------------------------


def test_codecarbon_that_fails_to_import_gives_an_estimate(broken_codecarbon: Path) -> None:
    # It also prints on stdout, where the sidecar answers: the answer must survive that.
    broken_codecarbon.write_text(
        "print('noise where the answer goes')\nraise ImportError('codecarbon is broken on purpose')\n"
    )
    m, _ = _measure(Meter(tracking_mode="process", share="process"), burn=0.2)

    assert (m.method, m.cpu_method, m.codecarbon_version) == ("estimate", "estimate", None)
    assert any("codecarbon is broken on purpose" in e for e in m.errors)
    assert m.cpu_energy_kwh > 0 and m.ram_energy_kwh > 0
    _assert_consistent(m)


def test_sidecar_that_crashes_gives_an_estimate(broken_codecarbon: Path) -> None:
    broken_codecarbon.write_text("import os\nos._exit(3)\n")
    m, _ = _measure(Meter(tracking_mode="machine"), 0.1)

    assert m.method == "estimate"
    assert any("exited with code 3" in e for e in m.errors)
    assert m.cpu_energy_kwh > 0
    _assert_consistent(m)


def test_killed_sidecar_gives_an_estimate(cache: Path) -> None:
    meter = Meter(tracking_mode="process", share="process")
    meter.start()
    assert meter.sidecar_pid is not None
    os.kill(meter.sidecar_pid, signal.SIGKILL)
    _burn_cpu(0.1)
    m = meter.stop()

    assert m.method == "estimate"
    assert any(f"killed by signal {signal.SIGKILL.value}" in e for e in m.errors)
    assert m.cpu_energy_kwh > 0


def test_hung_sidecar_is_killed_after_the_timeout(broken_codecarbon: Path) -> None:
    broken_codecarbon.write_text("import time\ntime.sleep(60)\n")
    meter = Meter(tracking_mode="machine", stop_timeout_s=0.5)
    meter.start()
    pid = meter.sidecar_pid
    asked = time.perf_counter()
    m = meter.stop()

    assert time.perf_counter() - asked < 2.5
    assert m.method == "estimate"
    assert any("no answer within 0.5 s" in e for e in m.errors)
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_stop_is_idempotent_and_start_twice_is_harmless(cache: Path) -> None:
    meter = Meter(tracking_mode="machine")
    meter.start()
    meter.start()
    first = meter.stop()

    assert meter.stop() is first
    assert meter.measurement is first
    assert first.method == "cpu_load"


def test_stop_without_start_returns_an_empty_estimate() -> None:
    m = Meter().stop()

    assert m.method == "estimate"
    assert m.duration_s == 0.0
    assert any("before start()" in e for e in m.errors)


def test_meter_is_a_context_manager(cache: Path) -> None:
    with Meter(tracking_mode="machine") as meter:
        time.sleep(0.05)

    assert meter.measurement is not None
    assert meter.measurement.method == "cpu_load"


@pytest.mark.parametrize("mode", ["machine", "process"])
def test_estimate_without_meter_covers_the_window_it_is_given(mode: str) -> None:
    started = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    m = estimate_without_meter(started, started + timedelta(seconds=10), tracking_mode=mode)

    assert (m.method, m.tracking_mode, m.duration_s) == ("estimate", mode, 10.0)
    assert (m.started_at, m.ended_at) == (started, started + timedelta(seconds=10))
    assert m.cpu_energy_kwh > 0 and m.ram_energy_kwh > 0 and m.errors
    _assert_consistent(m)


def test_estimate_without_meter_rejects_unknown_tracking_mode() -> None:
    now = datetime.now(timezone.utc)
    with pytest.raises(ValueError, match="tracking_mode"):
        estimate_without_meter(now, now, tracking_mode="offline")


@pytest.mark.parametrize("memory_gb", [0.5, 3, 8, 24, 48, 100, 200, 768, 4096])
def test_estimate_uses_codecarbons_ram_model(memory_gb: float) -> None:
    from codecarbon.external.ram import RAM

    assert _ram_power_w(memory_gb) == pytest.approx(RAM()._calculate_ram_power(memory_gb))


def test_sidecar_exits_when_the_step_dies_without_stopping(cache: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, sys, time
        from carbonpipe.measure.meter import Meter
        meter = Meter(tracking_mode="machine")
        meter.start()
        print(meter.sidecar_pid, flush=True)
        time.sleep(0.5)
        os._exit(0)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert _exits_within(int(done.stdout.strip()), 5.0)


# -- back-dating paths this machine cannot exercise (no GPU, no RAPL): CodeCarbon's shapes --------


def _session_started_after(gap_s: float) -> _meter._Session:
    session = _meter._Session({"tracking_mode": "machine"}, _meter._Tail())
    session.cc_started_perf = time.perf_counter()
    session.window_start_perf = session.cc_started_perf - gap_s
    return session


def test_gpu_energy_counters_move_back_by_their_power_over_the_gap() -> None:
    from codecarbon.core.units import Energy

    class Device:  # the attributes of CodeCarbon 3.3's GPUDevice that back-dating uses
        def __init__(self, kwh: float, *, counter: bool) -> None:
            self.last_energy = Energy(kWh=kwh)
            self._use_power_fallback = not counter

        def _read_power_watts(self) -> float:
            return 360.0

    devices = [Device(1.0, counter=True), Device(2.0, counter=False)]
    gpu = SimpleNamespace(devices=SimpleNamespace(devices=devices))

    assert _session_started_after(10.0)._backdate_gpu(gpu)
    assert devices[0].last_energy.kWh == pytest.approx(1.0 - 360.0 * 10.0 / J_PER_KWH, rel=1e-3)
    # Without a counter CodeCarbon integrates power over the (back-dated) interval by itself.
    assert devices[1].last_energy.kWh == 2.0


def test_rapl_counters_start_from_the_steps_snapshot_through_symlinks(tmp_path: Path) -> None:
    from codecarbon.core.units import Energy

    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text("5000000\n")
    (tmp_path / "subsystem").symlink_to(tmp_path / "powercap")
    read_by_codecarbon = SimpleNamespace(
        path=str(tmp_path / "subsystem" / "intel-rapl:0" / "energy_uj"), last_energy=Energy(kWh=9.0)
    )
    interface = SimpleNamespace(_rapl_files=[read_by_codecarbon])

    assert _meter._Session._backdate_rapl(interface, {str(zone / "energy_uj"): 1_000_000})
    assert read_by_codecarbon.last_energy.kWh == pytest.approx(1.0 / J_PER_KWH)
    assert not _meter._Session._backdate_rapl(interface, {})
