"""The ``carbonpipe`` command as users run it: a real subprocess, real signals, real stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.report import read_records, record_keys

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def _records(store_dir: Path) -> list:
    store = open_store(str(store_dir))
    return list(read_records(store, record_keys(store)))


def test_run_tracks_a_command_and_keeps_its_output(tmp_path: Path) -> None:
    out = _run(
        [
            "run",
            "--project",
            "P",
            "--step",
            "train",
            "--store",
            str(tmp_path),
            *WHERE,
            "--",
            sys.executable,
            "-c",
            "print('hello from the step')",
        ]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello from the step"
    assert "g CO2e" in out.stderr and "g/kWh" in out.stderr
    [rec] = _records(tmp_path)
    assert (rec.project, rec.step, rec.status) == ("P", "train", "succeeded")
    assert rec.energy_kwh["total"] > 0


@pytest.mark.parametrize("code", [pytest.param(1, id="one"), pytest.param(7, id="seven")])
def test_run_exits_with_the_command_exit_code(tmp_path: Path, code: int) -> None:
    out = _run(
        [
            "run",
            "--store",
            str(tmp_path),
            *WHERE,
            "--",
            sys.executable,
            "-c",
            f"import sys; sys.exit({code})",
        ]
    )
    assert out.returncode == code
    [rec] = _records(tmp_path)
    assert rec.status == "failed"


def test_run_reports_a_missing_command_like_a_shell(tmp_path: Path) -> None:
    out = _run(["run", "--store", str(tmp_path), *WHERE, "--", "definitely-not-a-command-xyz"])
    assert out.returncode == 127
    assert "command not found" in out.stderr


def test_run_forwards_signals_to_the_command(tmp_path: Path) -> None:
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        CLI + ["run", "--store", str(tmp_path), *WHERE, "--", sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 42
    [rec] = _records(tmp_path)
    assert rec.status == "failed"


def test_run_reports_a_command_killed_by_a_signal(tmp_path: Path) -> None:
    child = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    out = _run(["run", "--store", str(tmp_path), *WHERE, "--", sys.executable, "-c", child])
    assert out.returncode == 128 + signal.SIGKILL
    [rec] = _records(tmp_path)
    assert rec.status == "killed"


def test_run_keeps_the_exit_code_when_the_store_is_down(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = _run(
        [
            "run",
            "--store",
            str(blocker / "store"),
            *WHERE,
            "--",
            sys.executable,
            "-c",
            "import sys; sys.exit(5)",
        ]
    )
    assert out.returncode == 5
    assert "spooled" in out.stderr
    blocker.unlink()
    flushed = _run(["flush", "--json"])
    assert flushed.returncode == 0, flushed.stderr
    # the record and its ledger charges (pipeline and run scopes) were all spooled
    assert json.loads(flushed.stdout)["delivered"] >= 1
    assert json.loads(flushed.stdout)["remaining"] == 0
    assert len(_records(blocker / "store")) == 1


def test_run_budget_gate_stops_the_command_before_it_starts(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    spend = ["run", "--store", str(tmp_path / "s"), *WHERE, "--pipeline", "g"]
    assert _run([*spend, "--", sys.executable, "-c", "pass"]).returncode == 0  # > 1 microgram
    args = [*spend, "--budget-scope", "pipeline:g", "--budget-kg", "1e-9"]
    cmd = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')"]
    out = _run(args + cmd)
    assert out.returncode == 3, out.stderr
    assert "not started" in out.stderr
    assert not marker.exists()
    skipped = _run(args + ["--on-exceed", "skip"] + cmd)
    assert skipped.returncode == 0 and "skipped" in skipped.stderr
    assert not marker.exists()


def test_detect_json_has_the_documented_keys() -> None:
    out = _run(["detect", "--json", *WHERE])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {
        "provider",
        "region",
        "country_iso",
        "intensity_g_per_kwh",
        "detected_by",
        "intensity_source",
        "elapsed_ms",
    }
    assert (data["provider"], data["region"], data["detected_by"]) == (
        "gcp",
        "europe-west1",
        "argument",
    )
    assert set(data["intensity_source"]) == {"name", "vintage", "kind"}


def test_detect_off_cloud_falls_back_to_the_world_average() -> None:
    out = _run(["detect", "--json"])
    data = json.loads(out.stdout)
    assert data["provider"] is None and data["detected_by"] in ("world", "default")


def test_report_summarises_the_store(tmp_path: Path) -> None:
    for step in ("a", "b"):
        assert (
            _run(
                [
                    "run",
                    "--store",
                    str(tmp_path),
                    "--pipeline",
                    "p1",
                    "--step",
                    step,
                    *WHERE,
                    "--",
                    sys.executable,
                    "-c",
                    "pass",
                ]
            ).returncode
            == 0
        )
    out = _run(["report", "--store", str(tmp_path), "--json"])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    recs = _records(tmp_path)
    assert data["records"] == 2
    assert data["emissions_kg_co2e"] == pytest.approx(sum(r.emissions_kg_co2e for r in recs))
    assert data["by_pipeline"]["p1"]["records"] == 2
    text = _run(["report", "--store", str(tmp_path)])
    assert "records:    2" in text.stdout


def test_budget_status_and_config_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "carbon.yaml"
    cfg.write_text(
        f"store: {tmp_path / 'store'}\nbudgets:\n  - {{scope: 'pipeline:p1', period: month, "
        "limit_g_co2e: 100, default_step_estimate_g: 1}\n"
    )
    env = {**os.environ, "CARBONPIPE_CONFIG": str(cfg)}
    assert (
        subprocess.run(
            CLI + ["run", "--pipeline", "p1", *WHERE, "--", sys.executable, "-c", "pass"],
            env=env,
            timeout=120,
        ).returncode
        == 0
    )
    out = _run(["budget", "status", "pipeline:p1", "--json"], env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    [rec] = _records(tmp_path / "store")
    assert data["used_kg"] == pytest.approx(
        rec.emissions_kg_co2e, abs=1e-9
    )  # the ledger counts whole micrograms
    assert data["limit_kg"] == pytest.approx(0.1)
    shown = json.loads(_run(["config", "--json"], env=env).stdout)
    assert shown["store"]["source"] == "file"


def test_bad_arguments_get_a_clear_error(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = _run(
        [
            "run",
            "--store",
            "ftp://nope",
            *WHERE,
            "--",
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w')",
        ]
    )
    # an unusable store URI is the user's configuration error: refused before the step starts
    assert out.returncode == 2 and "s3://bucket" in out.stderr
    assert not marker.exists()
    bad = _run(["detect", "--provider", "ibm"])
    assert bad.returncode == 2 and "gcp" in bad.stderr
    assert _run(["run"]).returncode == 2


def test_run_keeps_the_exit_code_when_the_warm_up_fails(tmp_path: Path) -> None:
    # While the command runs, the wrapper resolves the location; a detection switch it cannot
    # read fails there (and again at stop, where it is recorded), never the command. (A bad
    # region no longer gets this far: it is refused before the command starts.)
    out = _run(
        [
            "run",
            "--store",
            str(tmp_path),
            "--provider",
            "gcp",
            "--",
            sys.executable,
            "-c",
            "import sys; sys.exit(3)",
        ],
        env={**os.environ, "CARBONPIPE_CLOUD_DETECTION": "sometimes"},
    )
    assert out.returncode == 3, out.stderr
    [rec] = _records(tmp_path)
    assert rec.status == "failed"
    assert any("location" in e for e in rec.tracking_errors)


# -- the wrapper starts the command first --------------------------------------------------
# An audit hook notes which modules the wrapper had loaded when it spawned the command.
_SPAWN_PROBE = """
import json, os, sys
seen = {}
def hook(event, args):
    if event in ("os.posix_spawn", "os.fork") and not seen:
        seen["modules"] = sorted(sys.modules)
sys.addaudithook(hook)
from carbonpipe.cli.app import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    json.dump(seen, fh)
sys.exit(code)
"""


def _spawn_probe(tmp_path: Path, args: list[str], **kwargs: object) -> tuple[int, list[str]]:
    out_file = tmp_path / "modules.json"
    out = subprocess.run(
        [sys.executable, "-c", _SPAWN_PROBE, str(out_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,  # type: ignore[call-overload]
    )
    return out.returncode, json.loads(out_file.read_text()).get("modules", [])


def test_run_starts_the_command_before_loading_the_tracking(tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, loaded = _spawn_probe(
        tmp_path, ["run", "--store", str(store), *WHERE, "--", sys.executable, "-c", "pass"]
    )
    assert code == 0
    heavy = {"argparse", "logging", "typing", "dataclasses", "pathlib", "subprocess", "yaml"}
    heavy |= {
        "carbonpipe.tracker",
        "carbonpipe.measure.meter",
        "carbonpipe.stores.base",
        "codecarbon",
    }
    at_startup = subprocess.run(  # an editable install's path finder loads pathlib at start-up
        [sys.executable, "-c", "import sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    early = heavy & set(loaded) - set(at_startup)
    assert not early, sorted(early)
    assert {"carbonpipe.cli.app", "carbonpipe.config", "carbonpipe.measure.counters"} <= set(loaded)
    [rec] = _records(store)  # and the step was tracked all the same
    assert rec.status == "succeeded" and rec.energy_kwh["total"] > 0


def test_a_budget_gates_the_command_before_it_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "carbon.yaml"
    cfg.write_text(
        f"store: {tmp_path / 'store'}\nproject: g\n"
        "budgets:\n  - {scope: 'pipeline:g', period: month, limit_g_co2e: 1.0e-6,"
        " default_step_estimate_g: 1.0e-6}\n"
    )
    marker = tmp_path / "ran"
    env = {**os.environ, "CARBONPIPE_CONFIG": str(cfg)}
    first = _run(["run", *WHERE, "--", sys.executable, "-c", "pass"], env=env)
    assert first.returncode == 0, first.stderr  # spends more than the budget allows
    code, loaded = _spawn_probe(
        tmp_path,
        ["run", *WHERE, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        env=env,
    )
    assert code == 3 and not marker.exists()
    assert loaded == []  # refused by the gate: nothing was spawned
    code, loaded = _spawn_probe(
        tmp_path, ["run", *WHERE, "--", sys.executable, "-c", "pass"], cwd=tmp_path
    )  # no --store: the default ./carbon-artifacts, under the test's folder
    assert code == 0 and "carbonpipe.tracker" not in loaded  # without the file: no gate


def test_the_window_opens_before_the_command_starts(tmp_path: Path) -> None:
    child = "import time; print(time.time(), flush=True); time.sleep(0.5)"
    out = _run(["run", "--store", str(tmp_path), *WHERE, "--", sys.executable, "-c", child])
    assert out.returncode == 0, out.stderr
    child_started = float(out.stdout.strip())
    [rec] = _records(tmp_path)
    assert datetime.fromisoformat(rec.started_at).timestamp() <= child_started
    assert rec.duration_s >= 0.5
    assert not rec.tracking_errors


def test_the_command_gets_a_clean_signal_state(tmp_path: Path) -> None:
    # The wrapper blocks the forwarded signals around the spawn and Python ignores SIGPIPE; the
    # command must get neither, as subprocess would start it.
    out = _run(["run", "--store", str(tmp_path), *WHERE, "--", "grep", "^Sig", "/proc/self/status"])
    assert out.returncode == 0, out.stderr
    masks = dict(line.split(":\t") for line in out.stdout.splitlines())
    assert int(masks["SigBlk"], 16) == 0
    assert not int(masks["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1))


def test_run_refuses_bad_settings_before_the_command_starts(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cmd = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    cases = [
        (["--store", str(tmp_path)], {"CARBONPIPE_PUE": "abc"}, "CARBONPIPE_PUE"),
        (["--store", "S3://Bad_Bucket"], {}, "s3://bucket"),
        (["--store", str(tmp_path), "--provider", "ibm"], {}, "--provider"),
        (["--store", str(tmp_path), "--label", "novalue"], {}, "KEY=VALUE"),
        (["--store", str(tmp_path), "--attempt", "0"], {}, "--attempt"),
        (["--store", str(tmp_path), "--tracking-mode", "gpu"], {}, "tracking-mode"),
    ]
    for options, env, named in cases:
        out = _run(["run", *WHERE, *options, *cmd], env={**os.environ, **env})
        assert out.returncode == 2, (options, out.stderr)
        assert named in out.stderr, (options, out.stderr)
        assert not marker.exists(), options


def test_run_reports_a_command_it_cannot_execute(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    out = _run(["run", "--store", str(tmp_path / "s"), *WHERE, "--", str(script)])
    assert out.returncode == 126
    assert "cannot execute" in out.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--", "python", "train.py", "--epochs", "3"],
        ["-v", "run", "--project", "P", "--step=train", "--", "python", "--json"],
        ["run", "--label", "a=1", "--label=b=2", "--json", "--attempt", "2", "--", "x"],
        ["run", "--tracking-mode", "process", "--metrics-json", "m.json", "--", "x", "--", "y"],
        ["run", "--store", "s3://bucket/p", "--provider", "gcp", "--region", "r", "--", "x"],
    ],
)
def test_the_fast_scan_reads_run_lines_as_argparse_does(argv: list[str]) -> None:
    from carbonpipe.cli.app import build_parser
    from carbonpipe.cli.run import scan_run

    scanned = scan_run(argv)
    assert scanned is not None
    assert vars(scanned) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--proj", "P", "--", "x"],  # an abbreviation: argparse's call
        ["run", "-h"],
        ["run", "python", "train.py"],  # no "--"
        ["run", "--json=yes", "--", "x"],
        ["run", "--tracking-mode", "gpu", "--", "x"],
        ["run", "--attempt", "two", "--", "x"],
        ["run", "--project", "--", "x"],
        ["run", "--project"],
        ["detect", "--json"],
        [],
    ],
)
def test_the_fast_scan_leaves_anything_else_to_argparse(argv: list[str]) -> None:
    from carbonpipe.cli.run import scan_run

    assert scan_run(argv) is None


def test_run_falls_back_to_subprocess_without_posix_spawn(tmp_path: Path) -> None:
    # As on Windows: no os.posix_spawnp. The command still runs, its exit code stands, it is tracked.
    wrapper = (
        "import os, sys\n"
        "del os.posix_spawnp\n"
        "from carbonpipe.cli.app import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    store = tmp_path / "store"
    out = subprocess.run(
        [sys.executable, "-c", wrapper, "run", "--store", str(store), *WHERE, "--"]
        + [sys.executable, "-c", "import sys; print('ran'); sys.exit(4)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 4, out.stderr
    assert out.stdout.strip() == "ran"
    [rec] = _records(store)
    assert rec.status == "failed"
    missing = subprocess.run(
        [sys.executable, "-c", wrapper, "run", "--store", str(store), *WHERE, "--", "no-such-xyz"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 127 and "command not found" in missing.stderr
