"""A tracked step whose process is killed with SIGKILL still ends with exactly one record.

Each step runs in a fresh Python process with a ``CarbonTracker``, as a KFP step or an Airflow
task does; the test kills it with a real SIGKILL, then recovers it the ways a user does: ``carbonpipe
flush`` (a subprocess), the next tracked step's start, the nightly ESG job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.intensity.table import lookup_intensity
from carbonpipe.measure.heartbeat import read_heartbeat
from carbonpipe.record import Record, make_record_id
from carbonpipe.report import read_records, record_keys
from carbonpipe.stores._spoolkey import seal
from carbonpipe.stores.open_steps import entries, open_dir

CLI = [sys.executable, "-m", "carbonpipe"]

_STEP = textwrap.dedent(
    """
    import json, sys, time
    from carbonpipe import CarbonTracker
    where = json.loads(sys.argv[3])
    tracker = CarbonTracker(
        project_name="lost", output_dir=sys.argv[1], run_id=sys.argv[2], measure_power_secs=0.5,
        **where,
    )
    with tracker.start_tracking("train") as step:
        print(step.record_id, flush=True)
        if sys.stdin.readline().strip() == "hang":
            time.sleep(600)
    """
)
GCP = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}


def _start_step(store: Path, run_id: str, where: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _STEP, str(store), run_id, json.dumps(where)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def _heartbeats(record_id: str, at_least: int) -> None:
    path = open_dir() / f"{record_id}.hb"
    deadline = time.monotonic() + 30
    while (read_heartbeat(path) or {}).get("beat", 0) < at_least:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen[str]) -> float:
    proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    proc.wait(timeout=10)
    return killed_at


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _flush() -> dict:
    out = subprocess.run(CLI + ["flush", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _records(store: Path) -> list[Record]:
    s = open_store(str(store))
    return list(read_records(s, record_keys(s)))


@pytest.mark.parametrize(
    "where",
    [pytest.param(GCP, id="located"), pytest.param({}, id="location-detected-by-the-sweeper")],
)
def test_a_step_killed_with_sigkill_is_recorded_once_as_lost(
    tmp_path: Path, where: dict[str, str]
) -> None:
    store = tmp_path / "store"
    step = _start_step(store, "run-1", where)
    record_id = make_record_id("lost", "lost", "run-1", "train", 1)
    _heartbeats(record_id, 3)
    killed_at = _kill(step)
    assert [p.name for p in entries()] == [f"{record_id}.json"]

    flushed = _flush()
    if flushed["lost_steps"]["running"]:  # its sidecar was still writing the last heartbeat
        flushed = _flush()
    assert flushed["lost_steps"]["lost"] == 1, flushed
    assert flushed["lost_steps"]["record_ids"] == [record_id]
    [rec] = _records(store)
    assert (rec.record_id, rec.status, rec.step, rec.run_id) == (
        record_id,
        "lost",
        "train",
        "run-1",
    )
    assert rec.energy_kwh["total"] > 0 and rec.energy_kwh["ram"] > 0
    # Up to the last heartbeat, written as the process died: within a second or two of the kill.
    ended = datetime.fromisoformat(rec.ended_at).timestamp()
    assert killed_at - 2.0 < ended < killed_at + 2.0
    assert rec.duration_s == pytest.approx(
        ended - datetime.fromisoformat(rec.started_at).timestamp(), abs=1e-3
    )
    assert rec.tracking_errors[0].startswith("step lost: its process")
    # Priced like any record: the location's intensity, the PUE, the ledger charged.
    if where:
        assert rec.location["detected_by"] == "argument"
        assert (
            rec.intensity_g_per_kwh
            == lookup_intensity("gcp", "europe-west1", None).intensity_g_per_kwh
        )
    else:
        assert rec.location["detected_by"] == "world"
        assert any("detected when its lost record was made" in e for e in rec.tracking_errors)
    local = rec.energy_kwh["cpu"] + rec.energy_kwh["gpu"] + rec.energy_kwh["ram"]
    assert rec.emissions_kg_co2e == pytest.approx(local * rec.pue * rec.intensity_g_per_kwh / 1000)
    # Its embodied share over the time it ran, from what its sidecar read in its cgroup.
    from carbonpipe.measure.resources import step_resources

    assert rec.embodied is not None and rec.embodied_kg_co2e > 0
    assert rec.embodied["method"] == "estimated" and rec.embodied["lifetime_years"] == 4.0
    assert rec.total_kg_co2e == pytest.approx(rec.emissions_kg_co2e + rec.embodied_kg_co2e)
    share = rec.embodied["share"]
    assert 0 < share <= 1
    if step_resources("machine")["cpus"] is None:  # no CPU limit here: the whole machine
        assert share == 1.0
    year_s = 365.25 * 86400
    assert rec.embodied_kg_co2e == pytest.approx(
        rec.embodied["host_kg_co2e"] * rec.duration_s / (4.0 * year_s) * share
    )
    charges = [k for k in open_store(str(store)).list("budgets/") if record_id in k]
    assert len(charges) == 1

    again = _flush()
    assert again["lost_steps"]["lost"] == 0 and again["delivered"] == 0
    assert len(_records(store)) == 1
    assert list(open_dir().iterdir()) == []


def test_flush_leaves_a_running_step_alone_and_it_ends_with_its_own_record(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    step = _start_step(store, "run-2", GCP)
    record_id = make_record_id("lost", "lost", "run-2", "train", 1)
    _heartbeats(record_id, 2)
    flushed = _flush()
    assert flushed["lost_steps"] == {
        "lost": 0,
        "finished": 0,
        "running": 1,
        "spooled": 0,
        "record_ids": [],
        "failed": [],
    }
    assert _records(store) == []

    assert step.stdin is not None
    step.stdin.write("stop\n")
    step.stdin.flush()
    assert step.wait(timeout=60) == 0
    [rec] = _records(store)
    assert (rec.record_id, rec.status) == (record_id, "succeeded")
    assert list(open_dir().iterdir()) == []
    assert _flush()["lost_steps"]["lost"] == 0
    assert len(_records(store)) == 1


def test_the_next_tracked_step_records_a_step_killed_before_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    killed = make_record_id("lost", "lost", "run-3", "train", 1)
    step = _start_step(store, "run-3", GCP)
    _heartbeats(killed, 2)
    _kill(step)
    time.sleep(1.0)  # the sidecar's last heartbeat

    nxt = _start_step(store, "run-4", GCP)
    assert nxt.stdin is not None
    nxt.stdin.write("stop\n")
    nxt.stdin.flush()
    assert nxt.wait(timeout=60) == 0
    by_status = sorted((r.status, r.record_id) for r in _records(store))
    assert by_status == [
        ("lost", killed),
        ("succeeded", make_record_id("lost", "lost", "run-4", "train", 1)),
    ]
    assert list(open_dir().iterdir()) == []


def test_a_final_record_left_beside_its_entry_is_delivered_instead_of_a_lost_one(
    tmp_path: Path,
) -> None:
    # The store and the spool both refuse the final record (a full or broken disk): the process
    # exits with its record only beside the open entry, where a kill during delivery leaves it.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = blocker / "store"
    spool = Path(os.environ["CARBONPIPE_SPOOL_DIR"])
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "pending").write_text("not a folder")
    step = _start_step(store, "run-5", GCP)
    assert step.stdin is not None
    step.stdin.write("stop\n")
    step.stdin.flush()
    assert step.wait(timeout=60) == 0
    record_id = make_record_id("lost", "lost", "run-5", "train", 1)
    assert (open_dir() / f"{record_id}.final").exists()

    blocker.unlink()
    (spool / "pending").unlink()
    flushed = _flush()
    assert flushed["lost_steps"]["finished"] == 1 and flushed["lost_steps"]["lost"] == 0
    [rec] = _records(store)
    assert (rec.record_id, rec.status) == (record_id, "succeeded")
    assert list(open_dir().iterdir()) == []


def test_the_nightly_job_records_lost_steps_before_it_counts(tmp_path: Path) -> None:
    from carbonpipe.esg.nightly import run_nightly

    store = tmp_path / "store"
    step = _start_step(store, "run-6", GCP)
    record_id = make_record_id("lost", "lost", "run-6", "train", 1)
    _heartbeats(record_id, 2)
    _kill(step)
    time.sleep(1.0)
    day = datetime.now(timezone.utc).date()
    result = run_nightly(str(store), f"{day.year}-{day.month:02d}", compact_first=False)
    assert result["lost_steps"]["lost"] == 1
    assert result["read"]["json_records"] == 1
    [rec] = _records(store)
    assert rec.status == "lost"


def test_a_step_killed_before_its_sidecar_was_ready_still_gets_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty hardware cache: CodeCarbon's detection keeps the sidecar busy for a second or two.
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(tmp_path / "cold-cache"))
    store = tmp_path / "store"
    step = _start_step(store, "run-7", GCP)
    record_id = make_record_id("lost", "lost", "run-7", "train", 1)
    _kill(step)
    # Its sidecar finishes the detection and finds its step gone: it exits, without a heartbeat
    # if it saw that before the step's start reached it, else with a last one marked owner_gone
    # (which of the two depends on how fast detection ran; both must give one lost record).
    sidecar = json.loads((open_dir() / f"{record_id}.json").read_text())["sidecar"]["pid"]
    deadline = time.monotonic() + 60
    while _running(sidecar) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(sidecar)
    beat = read_heartbeat(open_dir() / f"{record_id}.hb")

    flushed = _flush()
    assert flushed["lost_steps"]["lost"] == 1, flushed
    [rec] = _records(store)
    assert (rec.record_id, rec.status) == (record_id, "lost")
    if beat is None:
        assert rec.energy_kwh["total"] == 0.0 and rec.started_at == rec.ended_at
        assert rec.measurement["method"] == "estimate"
        assert "before its sidecar wrote any heartbeat" in rec.tracking_errors[0]
    else:
        assert beat.get("owner_gone") and "as the process died" in rec.tracking_errors[0]


def test_a_final_record_that_can_never_be_delivered_is_quarantined_and_the_step_recorded_lost(
    tmp_path: Path,
) -> None:
    # As above, the record is left beside its entry; then its bytes are damaged (a figure of
    # Infinity, which no valid record holds). The sweep must neither retry it for ever nor drop it.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = blocker / "store"
    spool = Path(os.environ["CARBONPIPE_SPOOL_DIR"])
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "pending").write_text("not a folder")
    step = _start_step(store, "run-6", GCP)
    assert step.stdin is not None
    step.stdin.write("stop\n")
    step.stdin.flush()
    assert step.wait(timeout=60) == 0
    record_id = make_record_id("lost", "lost", "run-6", "train", 1)
    final = open_dir() / f"{record_id}.final"
    document = json.loads(final.read_text())
    data = json.loads(document["data"])
    data["emissions_kg_co2e"] = float("inf")
    document["data"] = json.dumps(data)  # writes Infinity, as a broken writer would
    final.write_bytes(seal(spool, document))  # the broken writer is carbonpipe: it seals
    blocker.unlink()
    (spool / "pending").unlink()

    out = subprocess.run(CLI + ["flush", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr  # something is in the quarantine: flush says so
    flushed = json.loads(out.stdout)
    assert flushed["lost_steps"]["lost"] == 1 and flushed["lost_steps"]["finished"] == 0
    [kept] = [q for q in flushed["quarantine"] if q["key"].endswith(f"{record_id}.json")]
    assert kept["reason"] == "invalid_record" and "emissions_kg_co2e" in kept["error"]
    assert json.loads(Path(kept["path"]).read_text())["data"] == document["data"]  # kept as is
    [rec] = _records(store)
    assert (rec.record_id, rec.status) == (record_id, "lost")
    assert any("final record was invalid" in e for e in rec.tracking_errors)
    assert list(open_dir().iterdir()) == []
    again = subprocess.run(CLI + ["flush", "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["lost_steps"]["failed"] == []
    assert len(_records(store)) == 1


def test_a_heartbeat_planted_or_altered_is_never_used(tmp_path: Path) -> None:
    """Heartbeats are sealed with the spool's key like its entries: one whose seal does not
    verify (its energy raised a thousandfold here) gives no figure; the record says why."""
    store = tmp_path / "store"
    step = _start_step(store, "run-t", GCP)
    record_id = make_record_id("lost", "lost", "run-t", "train", 1)
    _heartbeats(record_id, 2)
    _kill(step)
    path = open_dir() / f"{record_id}.hb"
    sidecar = json.loads((open_dir() / f"{record_id}.json").read_text())["sidecar"]["pid"]
    deadline = time.monotonic() + 30
    while _running(sidecar) and time.monotonic() < deadline:  # its last heartbeat is written
        time.sleep(0.05)
    beat = json.loads(path.read_bytes())
    assert isinstance(beat.get("mac"), str)  # sealed by the sidecar
    beat["energy_kwh"] = {part: v * 1000 + 1.0 for part, v in beat["energy_kwh"].items()}
    path.write_text(json.dumps(beat))  # the old seal no longer matches

    flushed = _flush()
    assert flushed["lost_steps"]["lost"] == 1, flushed
    [rec] = _records(store)
    assert rec.status == "lost" and rec.energy_kwh["total"] == 0.0
    assert "cannot be trusted" in rec.tracking_errors[0]
    assert any("ignored" in e and "seal" in e for e in rec.tracking_errors)


_STEP_ELSEWHERE = textwrap.dedent(
    """
    import sys, time
    from carbonpipe import CarbonTracker
    tracker = CarbonTracker(project_name="lost", output_dir=sys.argv[1], run_id="run-pod",
                            cloud_provider="gcp", cloud_region="europe-west1",
                            measure_power_secs=0.5)
    with tracker.start_tracking("train") as step:
        # What the Airflow provider does for a KubernetesPodOperator it cannot measure.
        step.runs_elsewhere("remote work not measured: the pod launched by KubernetesPodOperator")
        print(step.record_id, flush=True)
        time.sleep(600)
    """
)


def test_a_step_whose_work_ran_elsewhere_says_so_in_its_lost_record(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STEP_ELSEWHERE, str(store)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    record_id = proc.stdout.readline().strip()
    proc.stdout.close()
    _heartbeats(record_id, 2)
    _kill(proc)
    if _flush()["lost_steps"]["lost"] == 0:  # its sidecar was still writing the last heartbeat
        _flush()
    [rec] = _records(store)
    assert rec.status == "lost" and rec.measurement["scope"] == "worker"
    notes = rec.tracking_errors
    assert "remote work not measured: the pod launched by KubernetesPodOperator" in notes
    assert any("died while its work ran elsewhere" in e for e in notes)
