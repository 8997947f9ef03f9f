"""What tracking costs a step: carbonpipe's CarbonTracker vs plain CodeCarbon, each trial a fresh process.

P1  added wall time of a tracked step: a fixed pure-Python workload (~1 s) in a fresh interpreter,
    as a KFP step runs, timed from outside: from spawning the process to its exit, so
    interpreter start-up, imports, the sidecar, writing the record and exit handlers all count.
    Variants: untracked; the user's path (``CarbonTracker`` with the location named and the local
    folder store: meter, record, ledger charge, baseline check); ``carbonpipe run -- <the step>``
    (the container entrypoint: a wrapper process, timed in the bare context only); the bare
    ``Meter`` (measurement alone); plain CodeCarbon's ``OfflineEmissionsTracker`` around the
    same step. Each round runs
    the variants in a shuffled order and the added time is the median over rounds of the paired
    difference with the untracked trial of the same round, which cancels the drift of a shared
    machine. Two contexts: ``bare`` (the step imports nothing else: the worst case) and ``kfp``
    (the standard-library modules and PyYAML that KFP's executor has imported before any
    component body runs are already loaded, as in every KFP and Airflow step).
P6  the sidecar's CPU cost per second of step: in all for the 1 s step (its start-up dominates),
    and for sampling alone (its CPU time from CodeCarbon's start to the last sample, per second)
    over ~9 s steps, at the default measure_power_secs and at 1 s.

The hardware profile is warmed first (as an image build would); one cold trial is shown apart.
Prints figures only. Usage: python bench/bench_overhead.py [--trials 11] [--mode machine]
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
import time
from typing import Any

# What kfp.dsl.executor_main (KFP 2.17) has imported before a component's body runs, among the
# modules carbonpipe uses; the bench checks the list against KFP when it is installed.
KFP_PRELOADED = [
    "typing",
    "dataclasses",
    "inspect",
    "logging",
    "uuid",
    "json",
    "re",
    "pathlib",
    "hashlib",
    "threading",
    "datetime",
    "yaml",
    "contextvars",
    "tempfile",
    "subprocess",
    "urllib.parse",
    "socket",
    "csv",
    "platform",
    "shutil",
    "random",
    "base64",
    "concurrent.futures",
    "http.client",
]

TRIAL = r"""
import time
first_perf = time.perf_counter()  # CLOCK_MONOTONIC: comparable with the parent's clock
import sys
variant, context, mode, loops, secs, sleep_s, store = (
    sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
    float(sys.argv[6]), sys.argv[7],
)
if context == "kfp":
    import importlib
    for name in sys.argv[8].split(","):
        importlib.import_module(name)
import json, os

def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total

extra = {}
began = time.perf_counter()
if variant == "tracker":
    from carbonpipe import CarbonTracker
    tracker = CarbonTracker(
        project_name="bench", experiment_name="overhead", output_dir=store,
        cloud_provider="gcp", cloud_region="europe-west1", tracking_mode=mode,
        measure_power_secs=secs,
    )
    handle = tracker.start_tracking("train")
elif variant == "meter":
    from carbonpipe.measure.meter import Meter
    meter = Meter(tracking_mode=mode, measure_power_secs=secs)
    meter.start()
elif variant == "codecarbon":
    from codecarbon import OfflineEmissionsTracker
    cc = OfflineEmissionsTracker(
        country_iso_code="USA", output_methods=[], log_level="error",
        allow_multiple_runs=True, tracking_mode=mode, measure_power_secs=secs,
    )
    cc.start()
step_began, step_cpu = time.perf_counter(), time.process_time()
work(loops)
time.sleep(sleep_s)
step_ended, step_cpu = time.perf_counter(), time.process_time() - step_cpu
if variant == "tracker":
    metrics = tracker.stop_tracking("train")
    meter = handle.meter
    extra = {"method": metrics.record.measurement["method"], "duration_s": metrics.duration_s,
             "errors": list(metrics.tracking_errors)}
    if meter is not None:
        extra.update(meter.diagnostics)
elif variant == "meter":
    m = meter.stop()
    extra = {"method": m.method, "duration_s": m.duration_s, "errors": list(m.errors),
             **meter.diagnostics}
elif variant == "codecarbon":
    cc.stop()
    extra = {"duration_s": cc.final_emissions_data.duration}
ended = time.perf_counter()
print(json.dumps({
    "setup_s": step_began - began, "step_s": step_ended - step_began,
    "stop_s": ended - step_ended, "step_cpu_s": step_cpu, **extra,
    "first_perf": first_perf, "end_perf": time.perf_counter(),
}), flush=True)
"""

VARIANTS = ("none", "tracker", "cli", "meter", "codecarbon")


def _trial(
    variant: str,
    context: str,
    mode: str,
    loops: int,
    secs: float,
    store: str,
    sleep_s: float = 0.0,
) -> dict[str, Any]:
    wrapper: list[str] = []
    if variant == "cli":  # the container entrypoint: carbonpipe run -- <the untracked step>
        wrapper = [
            *(sys.executable, "-m", "carbonpipe", "run", "--project", "bench", "--step", "train"),
            *("--store", store, "--provider", "gcp", "--region", "europe-west1", "--"),
        ]
        if mode != "machine":
            wrapper[4:4] = ["--tracking-mode", mode]
    began = time.perf_counter()
    done = subprocess.run(
        [
            *wrapper,
            sys.executable,
            "-c",
            TRIAL,
            "none" if variant == "cli" else variant,
            context,
            mode,
            str(loops),
            str(secs),
            str(sleep_s),
            store,
            ",".join(KFP_PRELOADED),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    exited = time.perf_counter()
    wall_s = exited - began
    if done.returncode != 0:
        raise SystemExit(f"{variant} trial failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall_s
    if variant != "cli":  # the clocks of the wrapper's child say nothing about the wrapper
        result["boot_s"] = result["first_perf"] - began
        result["exit_s"] = exited - result["end_perf"]
    return result


def _calibrate(target_s: float, store: str) -> int:
    """Return the loop count that takes about ``target_s`` here (median of a few fresh runs)."""
    probe = 2_000_000
    for variant in ("tracker", "meter", "codecarbon"):  # compiles every module's bytecode once
        _trial(variant, "bare", "machine", probe, 15.0, store)
    runs = [_trial("none", "bare", "machine", probe, 15.0, store)["step_s"] for _ in range(5)]
    return int(probe * target_s / statistics.median(runs))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def _check_kfp_preloaded() -> str:
    """Say whether KFP's executor really imports every module the ``kfp`` context preloads."""
    probe = (
        "import sys, json; import kfp.dsl.executor_main; "
        f"print(json.dumps([m for m in {KFP_PRELOADED!r} if m not in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return "kfp not installed here: the list is KFP 2.17's, not re-checked"
    missing = json.loads(done.stdout.strip().splitlines()[-1])
    if missing:
        return f"NOT all imported by kfp.dsl.executor_main: {missing}"
    return "all imported by kfp.dsl.executor_main before a component runs (checked)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--mode", choices=("machine", "process"), default="machine")
    parser.add_argument("--step-s", type=float, default=0.3, help="the CPU-bound step")
    parser.add_argument("--idle-s", type=float, default=1.0, help="the idle step")
    parser.add_argument("--measure-power-secs", type=float, default=None)
    parser.add_argument(
        "--no-bytecode", action="store_true", help="recompile modules in every process"
    )
    args = parser.parse_args()

    from carbonpipe.measure.meter import DEFAULT_MEASURE_POWER_SECS

    secs = args.measure_power_secs or DEFAULT_MEASURE_POWER_SECS
    scratch = tempfile.mkdtemp(prefix="carbonpipe-bench-")
    try:
        _run(args, secs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: argparse.Namespace, secs: float, scratch: str) -> None:
    os.environ["CARBONPIPE_CACHE_DIR"] = os.path.join(scratch, "calibration")
    # The location is named in the trials; this keeps any other probe off the network too.
    os.environ["CARBONPIPE_CLOUD_DETECTION"] = "off"
    if not args.no_bytecode:
        # An installed package ships compiled bytecode; a source checkout run with
        # PYTHONDONTWRITEBYTECODE=1 recompiles every module in every fresh process. Keep the
        # bytecode out of the tree, in the scratch folder (the sidecars inherit this too).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(scratch, "pycache")
    store = os.path.join(scratch, "store")
    loops = _calibrate(args.step_s, store)  # also fills the bytecode cache
    os.environ["CARBONPIPE_CACHE_DIR"] = os.path.join(scratch, "cache")  # empty: a cold first step
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; mode {args.mode}; "
        f"bytecode {'recompiled' if args.no_bytecode else 'cached'}"
    )

    cold = _trial("tracker", "bare", args.mode, loops, secs, store)
    print(
        f"cold trial (no hardware profile yet): CodeCarbon ready "
        f"{cold.get('window_lag_s', float('nan')):.2f} s after start, profile "
        f"{cold.get('profile')}; the step waited {_ms(cold.get('stop_wait_s', 0.0)).strip()} "
        "at stop (later steps on this machine skip the detection)"
    )

    # (workload, context, variant): the CPU-bound step shows the sidecar's start-up competing for
    # the CPU (it overlaps the first ~0.1 s of any step, so 0.3 s holds all of it, and a short
    # step keeps this VM's +-15 % run-to-run speed noise small in milliseconds); the idle step
    # (a 1 s sleep) has almost no noise, so it measures the fixed cost precisely.
    cells_wanted = [
        *(("cpu", "bare", v) for v in VARIANTS),
        *(("cpu", "kfp", v) for v in ("none", "tracker", "meter")),
        *(("idle", "bare", v) for v in ("none", "tracker", "cli", "meter")),
        *(("idle", "kfp", v) for v in ("none", "tracker")),
    ]
    rows: dict[tuple[str, str, str], list[dict[str, Any]]] = {cell: [] for cell in cells_wanted}
    shape = {"cpu": (loops, 0.0), "idle": (0, args.idle_s)}
    shuffler = random.Random(1)
    for _ in range(args.trials):
        order = list(rows)
        shuffler.shuffle(order)  # so no variant always runs right after another one
        for workload, context, variant in order:
            n, sleep_s = shape[workload]
            rows[workload, context, variant].append(
                _trial(variant, context, args.mode, n, secs, store, sleep_s=sleep_s)
            )

    def median(cell: tuple[str, str, str], field: str) -> float:
        return statistics.median(r[field] for r in rows[cell])

    def paired(cell: tuple[str, str, str]) -> list[float]:
        base = rows[cell[0], cell[1], "none"]
        return sorted(r["wall_s"] - b["wall_s"] for r, b in zip(rows[cell], base, strict=True))

    def added(cell: tuple[str, str, str]) -> float:
        return statistics.median(paired(cell))

    print(
        f"\nP1  added wall time, process spawn to exit, {args.trials} rounds of fresh processes; "
        f"cpu step ~{median(('cpu', 'bare', 'none'), 'step_s'):.2f} s of pure Python, "
        f"idle step {args.idle_s:g} s asleep"
    )
    print(f"    kfp context: {_check_kfp_preloaded()}")
    header = ("added", "p25..p75", "start-up", "setup", "stop", "exit", "step CPU")
    print(f"    {'':22}" + "".join(f"{h:>13}" for h in header))
    for cell in rows:
        spread = paired(cell)
        quart = statistics.quantiles(spread, n=4) if len(spread) > 1 else [spread[0]] * 3
        added_cells = (
            ("", "")
            if cell[2] == "none"
            else (_ms(added(cell)), f"{quart[0] * 1000:+.0f}..{quart[2] * 1000:+.0f} ms")
        )
        phases = [
            _ms(median(cell, f)) if cell[2] != "cli" else ""
            for f in ("boot_s", "setup_s", "stop_s", "exit_s")
        ]
        cells = (*added_cells, *phases, _ms(median(cell, "step_cpu_s")))
        print(f"    {' '.join(cell):22}" + "".join(f"{c:>13}" for c in cells))
    print(
        "    added: median over rounds of (tracked wall - untracked wall of the same round), with\n"
        "    its quartiles. Inside that wall time: start-up (spawn to the first line), setup (to the\n"
        "    step; imports included), stop (after the step), exit (to the parent seeing it gone).\n"
        "    step CPU: the workload's own CPU time (this VM's speed varies +-15 % run to run)"
    )
    for context in ("bare", "kfp"):
        worst = max(added(("cpu", context, "tracker")), added(("idle", context, "tracker")))
        cc = added(("cpu", "bare", "codecarbon"))
        print(
            f"    {context}: CarbonTracker adds {_ms(worst).strip()} (the larger of the two steps); "
            f"plain CodeCarbon adds {_ms(cc).strip()}, {cc / worst if worst > 0 else math.inf:.0f}x "
            "more; target <= 50 ms"
        )
    print(
        f"    carbonpipe run -- <step>: adds {_ms(added(('cpu', 'bare', 'cli'))).strip()} (cpu), "
        f"{_ms(added(('idle', 'bare', 'cli'))).strip()} (idle), target <= 50 ms: a second "
        "interpreter, which starts the step before its imports and exits after it"
    )
    for variant in ("tracker", "meter"):
        cell = ("cpu", "bare", variant)
        lag = median(cell, "window_lag_s")
        methods = ", ".join(sorted({r["method"] for r in rows[cell]}))
        coverage = statistics.median(r["duration_s"] / r["step_s"] for r in rows[cell])
        print(
            f"    {variant}: method {methods}; CodeCarbon started {lag:.2f} s after the step "
            f"(window back-dated); measured duration / step wall {coverage:.3f}"
        )
        errors = {
            e
            for key, found in rows.items()
            if key[2] == variant
            for r in found
            for e in r["errors"]
        }
        if errors:
            print(f"    {variant} errors: {sorted(errors)}")

    short_cpu = median(("cpu", "bare", "meter"), "sidecar_cpu_s")
    short_wall = median(("cpu", "bare", "meter"), "step_s")
    print("\nP6  sidecar CPU (its CPU seconds / the step's wall seconds)")
    print(
        f"    {short_wall:.1f} s step, in all: {short_cpu:.3f} CPU s over {short_wall:.2f} s = "
        f"{100 * short_cpu / short_wall:.1f} % of a core, nearly all of it its one-off start-up "
        f"(Python, CodeCarbon's import); on another core than the step's when there is one"
    )
    for interval in sorted({secs, 1.0}, reverse=True):
        long_rows = [
            _trial("meter", "bare", args.mode, loops, interval, store, sleep_s=8.0)
            for _ in range(3)
        ]
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
