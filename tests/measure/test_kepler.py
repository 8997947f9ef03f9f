"""Kepler through a real Prometheus: Debian's ``prometheus`` scrapes a loopback exporter serving
Kepler 0.10's metric names, its counters advancing at known powers; ``carbonpipe run`` reads the
pod's energy back through PromQL."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.config import resolve_settings
from carbonpipe.errors import ConfigError
from carbonpipe.measure import kepler
from carbonpipe.report import read_records, record_keys
from tests.schema_check import assert_valid

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]
SCRAPE_S = 1.0
# Watts of the pod under test, per series; another pod and an overlapping zone must not count.
CPU_W, DRAM_W, GPU_W = 20.0, 5.0, 30.0
_SERIES = (
    ('kepler_pod_cpu_joules_total{pod_namespace="ns",pod_name="p",pod_id="u1",zone="package"}', CPU_W),
    ('kepler_pod_cpu_joules_total{pod_namespace="ns",pod_name="p",pod_id="u1",zone="core"}', 15.0),
    ('kepler_pod_cpu_joules_total{pod_namespace="ns",pod_name="p",pod_id="u1",zone="dram"}', DRAM_W),
    ('kepler_pod_gpu_joules_total{pod_namespace="ns",pod_name="p",pod_id="u1",gpu="0"}', GPU_W),
    ('kepler_pod_cpu_joules_total{pod_namespace="ns",pod_name="other",pod_id="u2",zone="package"}', 99.0),
    ('kepler_pod_cpu_joules_total{pod_namespace="ns",pod_name="nodram",pod_id="u3",zone="package"}', 7.0),
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _exporter() -> http.server.ThreadingHTTPServer:
    born = time.time()

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            t = time.time() - born
            body = "".join(f"{name} {watts * t:.6f}\n" for name, watts in _SERIES).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return _serve(Exporter)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's prometheus on loopback, scraping the exporter every second; its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: run `make test` (it installs Debian's prometheus)"
        )
    exporter = _exporter()
    home = tmp_path_factory.mktemp("prometheus")
    config = home / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {SCRAPE_S:g}s, evaluation_interval: {SCRAPE_S:g}s}}\n"
        "scrape_configs:\n"
        "  - job_name: kepler\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.server_address[1]}']}}]\n"
    )
    port = _free_port()
    log = (home / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=home,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # up, and five scrapes in: a step's window never starts before the series
            try:
                got = _get(
                    f"{url}/api/v1/query?query=count_over_time(kepler_pod_cpu_joules_total[1m])"
                )
                values = [float(r["value"][1]) for r in got["data"]["result"]]
                if values and min(values) >= 5:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (home / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus never scraped the exporter"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        exporter.shutdown()


def _run_step(
    tmp_path: Path, env: dict[str, str], seconds: float = 5.0
) -> tuple[subprocess.CompletedProcess[str], dict]:
    store = tmp_path / "store"
    out = subprocess.run(
        [*CLI, "run", "--store", str(store), "--step", "s", *WHERE, "--", sys.executable, "-c",
         f"import time; time.sleep({seconds})"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    opened = open_store(str(store))
    (record,) = list(read_records(opened, record_keys(opened)))
    data = record.to_dict()
    assert_valid("record", json.dumps(data))
    return out, data


def test_a_step_in_a_pod_is_charged_the_pods_own_energy(prometheus: str, tmp_path: Path) -> None:
    env = {kepler.URL_ENV: prometheus, "POD_NAMESPACE": "ns", "POD_NAME": "p"}
    _, record = _run_step(tmp_path, env)
    m, energy, d = record["measurement"], record["energy_kwh"], record["duration_s"]
    assert m["method"] == "kepler", record["tracking_errors"]
    err_j = SCRAPE_S * 1.1  # one scrape interval's worth of each series, at its power
    for part, watts in (("cpu", CPU_W), ("ram", DRAM_W), ("gpu", GPU_W)):
        joules = energy[part] * 3.6e6
        assert abs(joules - watts * d) <= watts * err_j, (part, joules, watts * d)
    assert record["power_w"]["cpu"] == pytest.approx(energy["cpu"] * 3.6e6 / d)
    cross = m["cross_check"]
    assert cross["method"] in ("rapl", "cpu_load", "tdp", "nvml", "estimate")
    assert cross["energy_kwh"] > 0
    assert cross["ratio"] == pytest.approx(energy["total"] / cross["energy_kwh"])
    assert not any("Kepler" in e for e in record["tracking_errors"])


def test_prometheus_down_falls_back_to_codecarbon_with_the_reason(tmp_path: Path) -> None:
    env = {
        kepler.URL_ENV: f"http://127.0.0.1:{_free_port()}",
        "POD_NAMESPACE": "ns",
        "POD_NAME": "p",
    }
    _, record = _run_step(tmp_path, env, seconds=0.5)
    assert record["measurement"]["method"] != "kepler"
    assert "cross_check" not in record["measurement"]
    (note,) = [e for e in record["tracking_errors"] if "Kepler" in e]
    assert "could not be reached" in note and "CodeCarbon's figure was used" in note


def test_a_missing_series_falls_back_with_the_reason(prometheus: str, tmp_path: Path) -> None:
    env = {kepler.URL_ENV: prometheus, "POD_NAMESPACE": "ns", "POD_NAME": "absent"}
    _, record = _run_step(tmp_path, env, seconds=1.5)
    assert record["measurement"]["method"] != "kepler"
    (note,) = [e for e in record["tracking_errors"] if "Kepler" in e]
    assert "no kepler_pod_cpu_joules_total series" in note


def test_missing_dram_and_gpu_series_count_as_zero(prometheus: str) -> None:
    energy = kepler.pod_energy_kwh(
        prometheus, kepler.Pod("ns", "nodram"), ended_at=time.time(), duration_s=3.0
    )
    assert energy["ram"] == energy["gpu"] == 0.0
    assert abs(energy["cpu"] * 3.6e6 - 7.0 * 3.0) <= 7.0 * SCRAPE_S * 1.1


def test_the_pod_uid_selects_the_same_series(prometheus: str) -> None:
    by_uid = kepler.pod_energy_kwh(
        prometheus, kepler.Pod(uid="u1"), ended_at=time.time(), duration_s=3.0
    )
    assert abs(by_uid["cpu"] * 3.6e6 - CPU_W * 3.0) <= CPU_W * SCRAPE_S * 1.1  # fmt: skip


def test_a_slow_prometheus_is_cut_at_the_deadline() -> None:
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(3)

        def log_message(self, *args: object) -> None:
            pass

    server = _serve(Slow)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        t = time.monotonic()
        with pytest.raises(kepler.KeplerError, match="slower than the deadline"):
            kepler.pod_energy_kwh(
                url, kepler.Pod("ns", "p"), ended_at=time.time(), duration_s=2, deadline_s=0.5
            )
        assert time.monotonic() - t < 2.0
    finally:
        server.shutdown()


def test_label_values_are_escaped_for_promql() -> None:
    assert kepler.quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert (
        kepler.Pod("n", 'p"}or vector(1)#').selector()
        == 'pod_namespace="n",pod_name="p\\"}or vector(1)#"'
    )


@pytest.mark.parametrize(
    ("cgroup", "uid"),
    [
        ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_4a5b_8c9d_0123456789ab.slice/cri-containerd-ff.scope\n",
         "1b2c3d4e-0000-4a5b-8c9d-0123456789ab"),
        ("12:cpu,cpuacct:/kubepods/besteffort/pod1b2c3d4e-0000-4a5b-8c9d-0123456789ab/0123abcd\n",
         "1b2c3d4e-0000-4a5b-8c9d-0123456789ab"),
        ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
        ("0::/\n", None),
    ],
)  # fmt: skip
def test_the_pod_uid_comes_from_the_cgroup_path(cgroup: str, uid: str | None) -> None:
    assert kepler.pod_uid_from_cgroup(cgroup) == uid


def test_the_downward_api_names_win() -> None:
    assert kepler.find_pod({"POD_NAMESPACE": "ns", "POD_NAME": "p"}) == kepler.Pod("ns", "p")


def test_the_window_is_the_duration_rounded_up() -> None:
    assert [kepler.window_seconds(d) for d in (0.0, 0.2, 1.0, 4.01, 5.0)] == [1, 1, 1, 5, 5]


def test_carbon_yaml_measure_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "carbon.yaml"
    path.write_text("measure: {source: kepler, prometheus_url: 'http://prom:9090'}\n")
    assert resolve_settings(config_file=path).kepler_prometheus_url == "http://prom:9090"
    path.write_text("measure: {source: keplr, prometheus_url: 'http://prom:9090'}\n")
    with pytest.raises(ConfigError, match="did you mean kepler"):
        resolve_settings(config_file=path)
    path.write_text("measure: {source: kepler, prometheus_url: 'http://u:pw@prom:9090'}\n")
    with pytest.raises(ConfigError, match="credentials"):
        resolve_settings(config_file=path)
    path.write_text("measure: {source: codecarbon}\n")
    assert resolve_settings(config_file=path).kepler_prometheus_url is None
    monkeypatch.setenv(kepler.URL_ENV, "ftp://x")
    with pytest.raises(ConfigError, match="http:// or https://"):
        resolve_settings(config_file=path)


_KILLED_STEP = """
import sys, time
from carbonpipe import CarbonTracker
tracker = CarbonTracker(project_name="lost", output_dir=sys.argv[1], run_id="r1",
                        measure_power_secs=0.5, cloud_provider="gcp", cloud_region="europe-west1")
with tracker.start_tracking("train") as step:
    print(step.record_id, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("named", [True, False], ids=["pod-named", "pod-unknown"])
def test_a_killed_step_in_a_pod_is_charged_the_pods_energy_up_to_its_last_heartbeat(
    prometheus: str, tmp_path: Path, named: bool
) -> None:
    import signal

    from carbonpipe.measure.heartbeat import read_heartbeat
    from carbonpipe.stores.open_steps import open_dir

    store = tmp_path / "store"
    env = {**os.environ, kepler.URL_ENV: prometheus}
    env.update({"POD_NAMESPACE": "ns", "POD_NAME": "p"} if named else {})
    step = subprocess.Popen(
        [sys.executable, "-c", _KILLED_STEP, str(store)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert step.stdout is not None
    record_id = step.stdout.readline().strip()
    deadline = time.monotonic() + 60
    while (read_heartbeat(open_dir() / f"{record_id}.hb") or {}).get("beat", 0) < 7:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)
    step.send_signal(signal.SIGKILL)
    step.wait(timeout=10)
    step.stdout.close()
    # The sweep runs elsewhere (`carbonpipe flush`, with no Kepler setting of its own): the
    # step's open entry says where its pod's energy is.
    clean = {k: v for k, v in os.environ.items() if k not in ("POD_NAMESPACE", "POD_NAME")}
    for _ in range(2):  # once more if its sidecar was still writing the last heartbeat
        out = subprocess.run(
            [*CLI, "flush", "--json"], capture_output=True, text=True, timeout=120, env=clean
        )
        assert out.returncode == 0, out.stderr
        if json.loads(out.stdout)["lost_steps"]["lost"]:
            break
    opened = open_store(str(store))
    (rec,) = list(read_records(opened, record_keys(opened)))
    record = rec.to_dict()
    assert_valid("record", json.dumps(record))
    assert record["status"] == "lost" and record["tracking_errors"][0].startswith("step lost")
    m, energy, d = record["measurement"], record["energy_kwh"], record["duration_s"]
    if not named:
        assert m["method"] != "kepler"
        # (In a CI that itself runs in a pod, its cgroup names one Kepler has no series for.)
        why = ("pod was not known", "no kepler_pod_cpu_joules_total series")
        assert any(w in e for e in record["tracking_errors"] for w in why), record
        return
    assert m["method"] == "kepler", record["tracking_errors"]
    assert d >= 3.0
    for part, watts in (("cpu", CPU_W), ("ram", DRAM_W), ("gpu", GPU_W)):
        joules = energy[part] * 3.6e6
        assert abs(joules - watts * d) <= watts * SCRAPE_S * 1.1, (part, joules, watts * d)
    # The heartbeat's own (CodeCarbon's) figure for the same window, beside it.
    assert m["cross_check"]["method"] != "kepler" and m["cross_check"]["energy_kwh"] > 0
