"""Prometheus Pushgateway: ``carbonpipe run`` steps push to Debian's real ``prometheus-pushgateway``
started on 127.0.0.1, and the metrics are read back from its ``/metrics``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from carbonpipe import open_store
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]
BINARY = "prometheus-pushgateway"


def _binary() -> str:
    found = shutil.which(BINARY)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        # make test installs it (Makefile: pushgateway); a bare pytest run tries once too
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", BINARY],
            capture_output=True,
            timeout=300,
            check=False,
        )
        found = shutil.which(BINARY)
    if found is None:
        pytest.skip(f"{BINARY} is not installed and could not be (run `make test`, or apt-get it)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Pushgateway on a loopback port, for the whole session."""
    binary = _binary()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("pushgateway") / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{BINARY} did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBONPIPE_")}
    env.update(
        CARBONPIPE_CACHE_DIR=os.environ["CARBONPIPE_CACHE_DIR"],
        CARBONPIPE_SPOOL_DIR=os.environ["CARBONPIPE_SPOOL_DIR"],
        CARBONPIPE_CONFIG=os.environ["CARBONPIPE_CONFIG"],
    )
    env.update(extra)
    return env


def _run_step(store: Path, step: str, env: dict[str, str], code: str = "pass") -> Record:
    args = ["run", "--store", str(store), "--pipeline", "churn", "--team", "ml", "--step", step]
    done = subprocess.run(
        [*CLI, *args, *WHERE, "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == (0 if code == "pass" else 3), done.stderr
    s = open_store(str(store))
    (record,) = [r for r in read_records(s, record_keys(s)) if r.step == step]
    return record


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _one(samples: list[tuple[dict[str, str], float]], step: str) -> tuple[dict[str, str], float]:
    (hit,) = [(labels, v) for labels, v in samples if labels.get("step") == step]
    return hit


def test_a_step_pushes_its_figures_and_they_read_back(tmp_path: Path, pushgateway: str) -> None:
    env = _env(CARBONPIPE_PUSHGATEWAY_URL=pushgateway)
    record = _run_step(tmp_path / "store", "train", env)
    assert record.tracking_errors == []
    failed = _run_step(tmp_path / "store", "score", env, "raise SystemExit(3)")
    got = _samples(pushgateway)
    labels, energy = _one(got["carbonpipe_step_energy_joules_total"], "train")
    assert {k: v for k, v in labels.items() if k != "instance"} == {
        "job": "carbonpipe",
        "pipeline": "churn",
        "step": "train",
        "team": "ml",
        "status": "succeeded",
        "cloud_provider": "gcp",
        "cloud_region": "europe-west1",
    }
    assert energy == pytest.approx(record.energy_kwh["total"] * 3.6e6)
    _, grams = _one(got["carbonpipe_step_emissions_grams_total"], "train")
    assert grams == pytest.approx(record.emissions_kg_co2e * 1000) and grams > 0
    _, seconds = _one(got["carbonpipe_step_duration_seconds"], "train")
    assert seconds == pytest.approx(record.duration_s)
    labels, grams = _one(got["carbonpipe_step_emissions_grams_total"], "score")
    assert labels["status"] == failed.status != "succeeded"
    assert grams == pytest.approx(failed.emissions_kg_co2e * 1000)
    # A second attempt of the same step replaces its group: the latest attempt's figures.
    again = _run_step(tmp_path / "store2", "train", env)
    _, energy = _one(_samples(pushgateway)["carbonpipe_step_energy_joules_total"], "train")
    assert energy == pytest.approx(again.energy_kwh["total"] * 3.6e6)


def test_a_gateway_that_never_answers_costs_the_deadline_not_the_step(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = _env(CARBONPIPE_PUSHGATEWAY_URL=url, CARBONPIPE_EXPORT_DEADLINE_S="1")
        started = time.monotonic()
        record = _run_step(tmp_path / "store", "train", env)
        elapsed = time.monotonic() - started
    (error,) = [e for e in record.tracking_errors if "Pushgateway" in e]
    assert url in error and "1 s" in error
    assert (
        elapsed < 30
    )  # the step itself is well under; the push waited 1 s, not a socket's default


def test_a_refused_push_is_a_tracking_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    record = _run_step(tmp_path / "store", "train", _env(CARBONPIPE_PUSHGATEWAY_URL=url))
    (error,) = [e for e in record.tracking_errors if "Pushgateway" in e]
    assert error.startswith(f"Pushgateway push to {url} failed")
