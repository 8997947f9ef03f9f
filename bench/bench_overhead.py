"""What tracking costs a step: carbonpipe's Meter vs plain CodeCarbon, each trial a fresh process.

P1  added wall time: a fixed pure-Python workload (~1 s) run untracked, under ``Meter`` (plain,
    and ``prepare()``-d before the 0.3 s every trial spends on pre-step set-up), and under
    CodeCarbon's ``OfflineEmissionsTracker``, each in a fresh interpreter as a KFP step would be.
    A trial times everything tracking adds inside the step's process: importing the tracker,
    starting it, the step itself (slower if the tracker competes for the CPU or the GIL),
    stopping it. Added time is the median of the paired differences with the untracked trial of
    the same round (a round runs the variants in a shuffled order), which cancels much of the
    drift of a shared machine; direct time is import + prepare + start + stop alone.
P6  the sidecar's CPU cost per second of step: in all for the 1 s step (its start-up dominates),
    and for sampling alone (its CPU time from CodeCarbon's start to the last sample, per second)
    over ~9 s steps, at the default measure_power_secs and at 1 s.

The hardware profile is warmed first (as an image build would); one cold trial is shown apart.
Prints figures only. Usage: python bench/bench_overhead.py [--trials 7] [--mode machine]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

TRIAL = r"""
import json, os, sys, time

variant, mode, loops, secs, sleep_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
PRE_STEP_S = 0.3  # what a step process does before its body (inputs, gate): the same for all

def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total

began = time.perf_counter()
if variant in ("meter", "prepared"):
    from carbonpipe.measure import Meter
    meter = Meter(tracking_mode=mode, measure_power_secs=secs)
    if variant == "prepared":
        meter.prepare()
early_s = time.perf_counter() - began
time.sleep(PRE_STEP_S)  # not timed
began = time.perf_counter()
if variant in ("meter", "prepared"):
    meter.start()
elif variant == "codecarbon":
    from codecarbon import OfflineEmissionsTracker
    tracker = OfflineEmissionsTracker(
        country_iso_code="USA", output_methods=[], log_level="error",
        allow_multiple_runs=True, tracking_mode=mode, measure_power_secs=secs,
    )
    tracker.start()
step_began, step_cpu = time.perf_counter(), time.process_time()
work(loops)
time.sleep(sleep_s)
step_ended, step_cpu = time.perf_counter(), time.process_time() - step_cpu
extra = {}
if variant in ("meter", "prepared"):
    m = meter.stop()
    extra = {"method": m.method, "duration_s": m.duration_s, "energy_kwh": m.total_energy_kwh,
             "errors": list(m.errors), **meter.diagnostics}
elif variant == "codecarbon":
    tracker.stop()
    d = tracker.final_emissions_data
    extra = {"duration_s": d.duration, "energy_kwh": d.energy_consumed}
ended = time.perf_counter()
print(json.dumps({
    "total_s": early_s + ended - began, "setup_s": early_s + step_began - began,
    "step_s": step_ended - step_began, "stop_s": ended - step_ended, "step_cpu_s": step_cpu, **extra,
}))
"""


def _trial(
    variant: str, mode: str, loops: int, secs: float, sleep_s: float = 0.0
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", TRIAL, variant, mode, str(loops), str(secs), str(sleep_s)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _calibrate(target_s: float) -> int:
    """Return the loop count that takes about ``target_s`` here (median of a few fresh runs)."""
    probe = 2_000_000
    _trial("meter", "machine", probe, 15.0)  # compiles carbonpipe's and CodeCarbon's bytecode
    _trial("codecarbon", "machine", probe, 15.0)
    runs = [_trial("none", "machine", probe, 15.0)["step_s"] for _ in range(5)]
    return int(probe * target_s / statistics.median(runs))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--mode", choices=("machine", "process"), default="machine")
    parser.add_argument("--step-s", type=float, default=1.0)
    parser.add_argument("--measure-power-secs", type=float, default=None)
    parser.add_argument(
        "--no-bytecode", action="store_true", help="recompile modules in every process"
    )
    args = parser.parse_args()

    from carbonpipe.measure import DEFAULT_MEASURE_POWER_SECS

    secs = args.measure_power_secs or DEFAULT_MEASURE_POWER_SECS
    scratch = tempfile.mkdtemp(prefix="carbonpipe-bench-")
    try:
        _run(args, secs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: argparse.Namespace, secs: float, scratch: str) -> None:
    os.environ["CARBONPIPE_CACHE_DIR"] = os.path.join(scratch, "calibration")
    if not args.no_bytecode:
        # An installed package ships compiled bytecode; a source checkout run with
        # PYTHONDONTWRITEBYTECODE=1 recompiles every module in every fresh process. Keep the
        # bytecode out of the tree, in the scratch folder (the sidecars inherit this too).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(scratch, "pycache")
    loops = _calibrate(args.step_s)  # also fills the bytecode cache
    os.environ["CARBONPIPE_CACHE_DIR"] = os.path.join(scratch, "cache")  # empty: a cold first step
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; mode {args.mode}; "
        f"bytecode {'recompiled' if args.no_bytecode else 'cached'}"
    )

    cold = _trial("meter", args.mode, loops, secs)
    print(
        f"cold trial (no hardware profile yet): added {_ms(cold['total_s'] - cold['step_s'])} "
        f"in the step, sidecar ready {cold.get('window_lag_s', float('nan')):.2f} s after start, "
        f"profile {cold.get('profile')}"
    )

    rows: dict[str, list[dict[str, Any]]] = {
        "none": [],
        "meter": [],
        "prepared": [],
        "codecarbon": [],
    }
    order = list(rows)
    shuffler = random.Random(1)
    for _ in range(args.trials):
        shuffler.shuffle(order)  # so no variant always runs right after another one
        for variant in order:
            rows[variant].append(_trial(variant, args.mode, loops, secs))

    def median(variant: str, field: str) -> float:
        return statistics.median(r[field] for r in rows[variant])

    def added(variant: str) -> float:
        return statistics.median(
            r["total_s"] - base["total_s"]
            for r, base in zip(rows[variant], rows["none"], strict=True)
        )

    untracked = median("none", "total_s")
    print(
        f"\nP1  added wall time, {args.trials} fresh processes each, step ~{untracked:.2f} s untracked"
    )

    def direct(variant: str) -> float:
        return statistics.median(r["setup_s"] + r["stop_s"] for r in rows[variant])

    print(f"    {'':12} {'added':>11} {'direct':>11} {'setup':>11} {'step':>11} {'stop':>11}")
    for variant in ("meter", "prepared", "codecarbon"):
        print(
            f"    {variant:12} {_ms(added(variant))} {_ms(direct(variant))} "
            f"{_ms(median(variant, 'setup_s'))} {_ms(median(variant, 'step_s'))} "
            f"{_ms(median(variant, 'stop_s'))}"
        )
    print(f"    {'untracked':12} {'':11} {'':11} {'':11} {_ms(median('none', 'step_s'))}")
    print(
        "    the step's CPU time for the same work (more = each instruction slower: GIL, shared core): "
        + ", ".join(f"{v} {_ms(median(v, 'step_cpu_s')).strip()}" for v in rows)
    )
    print(
        "    added: median over rounds of (tracked total - untracked total of the same round);"
        "\n    direct: median of import + start + stop alone (the step's own slow-down excluded)"
    )
    for name, measure in (("added", added), ("direct", direct)):
        ratio = measure("codecarbon") / measure("meter") if measure("meter") > 0 else math.inf
        print(f"    plain CodeCarbon / Meter, {name}: {ratio:.0f}x")
    print("    target for Meter: added <= 50 ms")
    for variant in ("meter", "prepared"):
        lag = statistics.median(r["window_lag_s"] for r in rows[variant])
        methods = ", ".join(sorted({r["method"] for r in rows[variant]}))
        coverage = statistics.median(r["duration_s"] / r["step_s"] for r in rows[variant])
        print(
            f"    {variant}: method {methods}; CodeCarbon started {lag:.2f} s after start() "
            f"(window back-dated); measured duration / step wall {coverage:.3f}"
        )
        errors = {e for r in rows[variant] for e in r["errors"]}
        if errors:
            print(f"    {variant} errors: {sorted(errors)}")

    short_cpu = median("meter", "sidecar_cpu_s")
    short_wall = median("meter", "step_s")
    print("\nP6  sidecar CPU (its CPU seconds / the step's wall seconds)")
    print(
        f"    1 s step, in all: {short_cpu:.3f} CPU s over {short_wall:.2f} s = "
        f"{100 * short_cpu / short_wall:.1f} % of a core, nearly all of it its one-off start-up "
        f"(Python, CodeCarbon's import); on another core than the step's when there is one"
    )
    for interval in sorted({secs, 1.0}, reverse=True):
        long_rows = [_trial("meter", args.mode, loops, interval, sleep_s=8.0) for _ in range(3)]
        sampling = statistics.median(r["sampling_cpu_s"] / r["sampling_s"] for r in long_rows)
        total = statistics.median(r["sidecar_cpu_s"] / r["step_s"] for r in long_rows)
        print(
            f"    sampling, measure_power_secs={interval:g}: {100 * sampling:.2f} % of a core while "
            f"the step runs (start-up included over a ~{long_rows[0]['step_s']:.0f} s step: "
            f"{100 * total:.1f} %)"
        )

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
