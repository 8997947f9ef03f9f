"""P6b: the measuring sidecar's steady-state CPU during an idle step, heartbeat included.

A tracked step (``CarbonTracker``, the user's path: the sidecar samples, measures every
``measure_power_secs`` and rewrites the step's heartbeat beside the spool) sleeps for a short and
for a long time, each in a fresh process, a few times. The sidecar's CPU time from CodeCarbon's
start to its last sample is read inside it with ``time.process_time()`` (nanoseconds, every thread
counted; ``/proc/<pid>/stat`` ticks every 10 ms, too coarse for a few milliseconds). The steady
state is (long - short) / (long wall - short wall), each the minimum of its runs, which cancels the
start and the last sample. For comparison: CodeCarbon's ``OfflineEmissionsTracker`` sampling in
the step's own process at its default period (15 s), measured the same way.

Prints figures only. Usage: python bench/bench_sidecar_cpu.py [--runs 3] [--short-s 2] [--long-s 22]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

TRIAL = r"""
import json, sys, time
variant, mode, secs, sleep_s, store = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
if variant == "tracker":
    from carbonpipe import CarbonTracker
    tracker = CarbonTracker(project_name="bench", output_dir=store, cloud_provider="gcp",
                            cloud_region="europe-west1", tracking_mode=mode, measure_power_secs=secs)
    handle = tracker.start_tracking("idle")
    time.sleep(sleep_s)
    tracker.stop_tracking("idle")
    d = handle.meter.diagnostics
    print(json.dumps({"cpu_s": d["sampling_cpu_s"], "wall_s": d["sampling_s"],
                      "errors": list(handle.metrics.tracking_errors)}))
else:  # CodeCarbon in the step's process: its threads' CPU is the process's, the step sleeps
    from codecarbon import OfflineEmissionsTracker
    cc = OfflineEmissionsTracker(country_iso_code="USA", output_methods=[], log_level="error",
                                 allow_multiple_runs=True, tracking_mode=mode, measure_power_secs=secs)
    cc.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(sleep_s)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    cc.stop()
    print(json.dumps({"cpu_s": cpu1 - cpu0, "wall_s": wall1 - wall0, "errors": []}))
"""


def _trial(variant: str, mode: str, secs: float, sleep_s: float, store: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", TRIAL, variant, mode, str(secs), str(sleep_s), store],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{variant} trial failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _steady(
    variant: str, mode: str, secs: float, args: argparse.Namespace, store: str
) -> tuple[float, float, set[str]]:
    """Return (CPU share of a core, ms per minute, errors seen) from short and long idle steps."""
    short = [_trial(variant, mode, secs, args.short_s, store) for _ in range(args.runs)]
    long_ = [_trial(variant, mode, secs, args.long_s, store) for _ in range(args.runs)]
    cpu_short, cpu_long = min(r["cpu_s"] for r in short), min(r["cpu_s"] for r in long_)
    wall_short, wall_long = min(r["wall_s"] for r in short), min(r["wall_s"] for r in long_)
    share = (cpu_long - cpu_short) / (wall_long - wall_short)
    errors = {e for r in short + long_ for e in r["errors"]}
    return share, share * 60_000, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--short-s", type=float, default=2.0)
    parser.add_argument("--long-s", type=float, default=22.0)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="carbonpipe-bench-sidecar-")
    try:
        os.environ["CARBONPIPE_CACHE_DIR"] = os.path.join(scratch, "cache")
        os.environ["CARBONPIPE_SPOOL_DIR"] = os.path.join(scratch, "spool")
        os.environ["CARBONPIPE_CLOUD_DETECTION"] = "off"
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has bytecode
        os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(scratch, "pycache")
        from carbonpipe.measure.meter import warm_hardware_profile

        warm_hardware_profile(cache_dir=os.environ["CARBONPIPE_CACHE_DIR"])
        store = os.path.join(scratch, "store")
        print(
            f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; idle steps of "
            f"{args.short_s:g} s and {args.long_s:g} s, minimum of {args.runs} runs each"
        )
        cases = [
            ("tracker", "machine", 5.0, "carbonpipe sidecar + heartbeat, machine, every 5 s"),
            ("tracker", "process", 5.0, "carbonpipe sidecar + heartbeat, process, every 5 s"),
            ("tracker", "machine", 15.0, "carbonpipe sidecar + heartbeat, machine, every 15 s"),
            ("codecarbon", "machine", 15.0, "CodeCarbon in the step's process, machine, 15 s"),
        ]
        for variant, mode, secs, label in cases:
            share, ms_per_min, errors = _steady(variant, mode, secs, args, store)
            print(f"    {label:<55} {100 * share:6.3f} % of a core ({ms_per_min:5.1f} ms/min)")
            if errors:
                print(f"        errors: {sorted(errors)}")
        print("    target: <= 0.1 % of a core for the sidecar, heartbeat included")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
