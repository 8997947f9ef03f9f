"""Nothing lost under faults: tracked steps while the store goes down, hangs and comes back.

``carbonpipe run`` steps run one after another against moto's S3 behind a fault proxy that
cycles down / hung / up every few seconds; now and then a wrapper is killed with SIGKILL in the
middle of its step. Then the proxy stays up and ``carbonpipe flush`` runs (twice: the second
must find nothing left). The script prints: steps run, records in the store, records
quarantined (with reasons), duplicates (must be 0), steps without exactly one record (must be
0: a killed step counts by its ``lost`` record), and the added wall time of a step (the worst,
and the median) over the same step against a healthy store.

Usage: ``python bench/bench_faults.py [--steps 200] [--cycle-s 3] [--kill-every 25]``.
The fault proxy is the test suite's (``tests/fault_proxy.py``); everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test suite's loopback servers

from carbonpipe.record import Record, make_record_id  # noqa: E402
from carbonpipe.stores.s3 import S3Store  # noqa: E402

PROJECT, PIPELINE, BUCKET, PREFIX = "faults", "fault-bench", "carbonpipe-bench", "carbon"
STEP_CODE = "import time; time.sleep({sleep})"


def _cycle(proxy: object, cycle_s: float, stop: threading.Event, log: list[str]) -> None:
    modes = ("down", "hang", "up")
    i = 0
    while not stop.wait(cycle_s):
        mode = modes[i % len(modes)]
        getattr(proxy, mode)()
        log.append(mode)
        i += 1


def _step(env: dict[str, str], run_id: str, *, sleep: float, kill_after: float | None) -> float:
    cmd = [
        sys.executable, "-m", "carbonpipe", "run",
        "--project", PROJECT, "--pipeline", PIPELINE, "--run-id", run_id, "--step", "work",
        "--provider", "gcp", "--region", "europe-west1",
        "--", sys.executable, "-c", STEP_CODE.format(sleep=sleep),
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cycle-s", type=float, default=3.0)
    parser.add_argument("--kill-every", type=int, default=25)
    parser.add_argument("--sleep-s", type=float, default=0.2, help="each step's own work")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="store_timeout_s")
    args = parser.parse_args()

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")  # moto's: no real account is ever reached
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import logging

    from moto.server import ThreadedMotoServer

    from tests.fault_proxy import FaultProxy

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    scratch = Path(tempfile.mkdtemp(prefix="carbonpipe-faults-"))
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CARBONPIPE_STORE": f"s3://{BUCKET}/{PREFIX}",
        "CARBONPIPE_STORE_TIMEOUT_S": str(args.timeout_s),
        "CARBONPIPE_SPOOL_DIR": str(scratch / "spool"),
        "CARBONPIPE_CACHE_DIR": str(scratch / "cache"),
        "CARBONPIPE_CLOUD_DETECTION": "off",
    }
    direct = S3Store(BUCKET, PREFIX, endpoint_url=endpoint)
    direct.client.create_bucket(Bucket=BUCKET)
    proxy = FaultProxy(endpoint).start()
    env["AWS_ENDPOINT_URL_S3"] = proxy.url

    _step(env, "warm-up", sleep=args.sleep_s, kill_after=None)  # a cold first start is not noise
    healthy = [_step(env, f"healthy-{i}", sleep=args.sleep_s, kill_after=None) for i in range(10)]
    baseline = statistics.median(healthy)
    noise = max(healthy) - baseline  # what this machine adds to a step with no fault at all

    stop = threading.Event()
    modes: list[str] = []
    cycler = threading.Thread(target=_cycle, args=(proxy, args.cycle_s, stop, modes), daemon=True)
    cycler.start()
    walls: list[float] = []
    killed: list[str] = []
    started = time.perf_counter()
    for i in range(args.steps):
        run_id = f"step-{i:04d}"
        kill = args.kill_every > 0 and i % args.kill_every == args.kill_every - 1
        if kill:
            killed.append(run_id)
            _step(env, run_id, sleep=5.0, kill_after=1.0)
        else:
            walls.append(_step(env, run_id, sleep=args.sleep_s, kill_after=None))
    stop.set()
    cycler.join()
    proxy.up()
    faulted_s = time.perf_counter() - started
    time.sleep(max(args.timeout_s, 1.0) * 2)  # the killed steps' sidecars see their owners gone

    flushes = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "carbonpipe", "flush", "--json"],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        flushes.append(json.loads(out.stdout) if out.stdout.strip() else {"error": out.stderr})

    records = [Record.from_json(direct.get(k).data) for k in direct.list("records/v2/")]
    by_id = Counter(r.record_id for r in records)
    expected = {
        make_record_id(PROJECT, PIPELINE, f"step-{i:04d}", "work", 1): f"step-{i:04d}"
        for i in range(args.steps)
    }
    healthy_ids = {make_record_id(PROJECT, PIPELINE, f"healthy-{i}", "work", 1) for i in range(10)}
    healthy_ids.add(make_record_id(PROJECT, PIPELINE, "warm-up", "work", 1))
    missing = [run for rid, run in expected.items() if by_id.get(rid, 0) != 1]
    extra = [rid for rid in by_id if rid not in expected and rid not in healthy_ids]
    statuses = Counter(r.status for r in records if r.record_id in expected)
    quarantine = flushes[0].get("quarantine", []) if isinstance(flushes[0], dict) else []
    reasons = Counter(str(q.get("reason")) for q in quarantine)
    added = [w - baseline for w in walls]

    print(f"faults: the store cycled down/hung/up every {args.cycle_s:g} s ({len(modes)} changes)")
    print(f"  store_timeout_s {args.timeout_s:g}; each step sleeps {args.sleep_s:g} s")
    print(f"steps run:                  {args.steps} ({len(killed)} wrappers killed with SIGKILL)")
    print(f"records in the store:       {sum(by_id[r] for r in expected)} of {args.steps}")
    print(f"  by status:                {dict(statuses)}")
    print(f"records quarantined:        {len(quarantine)} {dict(reasons)}")
    print(f"duplicates:                 {len(extra) + sum(max(0, c - 1) for c in by_id.values())}")
    print(
        f"lost (no record, or not one): {len(missing)}{' ' + str(missing[:5]) if missing else ''}"
    )
    print(
        f"flush: first delivered {flushes[0].get('delivered')}, second delivered "
        f"{flushes[1].get('delivered')} (remaining {flushes[1].get('remaining')})"
    )
    print(
        f"step wall, healthy store:   {baseline:.2f} s (median of 10; the slowest "
        f"+{noise:.2f} s: this machine's own noise)"
    )
    print(
        f"added wall time of a step:  worst {max(added):.2f} s, median {statistics.median(added):.2f} "
        f"s, p90 {sorted(added)[int(0.9 * (len(added) - 1))]:.2f} s (deadline {args.timeout_s:g} s)"
    )
    print(
        f"worst added, less the noise: {max(added) - noise:.2f} s (the store's share; "
        f"deadline {args.timeout_s:g} s)"
    )
    print(f"whole faulted run:          {faulted_s:.0f} s")
    proxy.stop()
    moto.stop()


if __name__ == "__main__":
    main()
