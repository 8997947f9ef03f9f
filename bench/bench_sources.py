"""Issue 17: what a time-series intensity source adds to a step's stop, cache warm and cold.

With ``CARBONPIPE_INTENSITY_SOURCE`` set, a step's stop calls
:func:`carbonpipe.intensity.timed.step_series` (the source behind the disk cache, bounded by
``intensity.timeout_s``) before pricing; with the table (the default) it calls nothing. Two
sources, for a step at gcp/europe-west1 (zone BE) whose hour-long window ended 5 min ago:
``electricitymaps`` against the test suite's loopback Electricity Maps v3 server
(``tests/intensity/api_servers.py``, on 127.0.0.1), and ``file:PATH`` over a CSV this bench
writes (a year of hourly BE points, ending after now).

S1  warm: the added time of ``step_series`` over the table's (``spec="table"``, called in
    alternation in the same process), median and p90 of ``--calls`` paired calls, after one
    call filled the cache (electricitymaps: the cache file; file: the file parsed once per
    process). Goal <= 1 ms. Beside it, two things a stop may also pay: a warm folder asked for
    a window ending *now* (each stop's own window, which the cache has not answered yet: one
    request to the server), and pricing the step with the series (``price_profile`` over the
    most intervals a profile keeps, 200: a step of 1000 s or more at the 5 s default).
S2  cold: the same with an empty cache folder for every call (electricitymaps: one request,
    the folder created, the file written) or the file not yet parsed (the first step of a
    process; ``carbonpipe run`` and the tracker read it before the step starts).
S3  deadline: a server that accepts and never answers, and one that answers after twice the
    deadline (``--timeout``, 1 s): the time ``step_series`` takes against its deadline, and
    that it fell back (no series, a reason). Then the next call in the same process, which a
    failure within the last minute answers at once.
S4  end to end (``--rounds``; 0 skips it): a fresh process runs a ``CarbonTracker`` step (0.2 s
    of sleep) with the source set or unset, in shuffled order each round, cache folder warm;
    the added time of the start (import, ``CarbonTracker(...)``, ``start_tracking``), of
    ``stop_tracking`` and of the process's wall time, each the median over rounds of the
    paired difference with the round's unset trial. A stop's window ends now, so each
    electricitymaps stop asks the server once (the cache answers windows already asked).

Nothing leaves 127.0.0.1. Prints figures only.
Usage: ``python bench/bench_sources.py [--calls 200] [--cold 30] [--timeout 1] [--rounds 9]``.
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
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test suite's loopback API servers

from carbonpipe.intensity import cache as intensity_cache  # noqa: E402
from carbonpipe.intensity import file as file_source  # noqa: E402
from carbonpipe.intensity.timed import price_profile, step_series  # noqa: E402
from carbonpipe.measure.profile import MAX_POINTS  # noqa: E402
from carbonpipe.units import record_profile  # noqa: E402
from tests.intensity import api_servers  # noqa: E402

LOCATION = {"provider": "gcp", "region": "europe-west1", "country_iso": "BEL"}
HOURS = 8760

TRIAL = r"""
import json, sys, time
t0 = time.perf_counter()
from carbonpipe import CarbonTracker
tracker = CarbonTracker(project_name="bench", experiment_name="sources", output_dir=sys.argv[1],
                        cloud_provider="gcp", cloud_region="europe-west1")
tracker.start_tracking("train")
start_s = time.perf_counter() - t0
time.sleep(0.2)
t0 = time.perf_counter()
metrics = tracker.stop_tracking("train")
stop_s = time.perf_counter() - t0
print(json.dumps({"start_s": start_s, "stop_s": stop_s, "kind": metrics.record.intensity_source.get("kind"),
                  "errors": list(metrics.tracking_errors)}))
"""


class _SlowHandler(api_servers._ElectricityMaps):
    """Electricity Maps that answers after ``server.delay_s``."""

    def route(self, path: str, query: dict[str, str]) -> None:
        time.sleep(self.server.delay_s)  # type: ignore[attr-defined]
        super().route(path, query)


class _QuietServer(api_servers.ApiServer):
    delay_s = 0.0

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the slow server writes to a socket the client has closed: expected


def write_year(path: Path, end: datetime) -> None:
    """A year of hourly BE points ending at ``end``, in the file source's CSV format."""
    first = end - timedelta(hours=HOURS)
    rows = ["timestamp,zone,intensity_g_per_kwh"]
    for h in range(HOURS):
        t = first + timedelta(hours=h)
        value = 160 + 60 * math.cos(2 * math.pi * h / 24) + 40 * math.cos(2 * math.pi * h / HOURS)
        rows.append(f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},BE,{value:.1f}")
    path.write_text("\n".join(rows) + "\n")


def window(now: datetime | None = None) -> tuple[datetime, datetime]:
    """An hour-long step that ended 5 min before ``now``."""
    end = (now or datetime.now(timezone.utc)) - timedelta(minutes=5)
    return end - timedelta(hours=1), end


def paired(
    call: Callable[[], Any], n: int, before: Callable[[], Any] | None = None
) -> tuple[list[float], list[float]]:
    """``n`` rounds of (the table's ``step_series``, ``call``) in alternating order: the added
    times (call - table) and the table's own times, in seconds."""
    start, end = window()
    added, table = [], []
    for i in range(n):
        if before is not None:
            before()
        pair = []
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            if which == 0:
                step_series(LOCATION, start, end, spec="table")
            else:
                call()
            pair.append((which, time.perf_counter() - t0))
        got = dict(pair)
        added.append(got[1] - got[0])
        table.append(got[0])
    return added, table


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:9.3f} ms"


def _p90(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    )


def row(label: str, added: list[float], note: str = "") -> dict[str, float]:
    med, p90 = statistics.median(added), _p90(added)
    print(f"  {label:<44}{_ms(med)}{_ms(p90)}{_ms(max(added))}  n={len(added)}  {note}")
    return {"median": med, "p90": p90, "max": max(added)}


def header(title: str) -> None:
    print(f"\n{title}\n  {'':<44}{'median':>12}{'p90':>12}{'max':>12}")


def _check(result: tuple[Any, str | None], what: str) -> None:
    series, why = result
    if series is None:
        raise SystemExit(f"{what}: no series ({why})")


def in_process(args: argparse.Namespace, tmp: Path, server: Any, csv_path: Path) -> dict:
    env = {
        "ELECTRICITYMAPS_API_URL": server.url,
        "ELECTRICITYMAPS_API_TOKEN": api_servers.EM_TOKEN,
        "CARBONPIPE_CACHE_DIR": str(tmp / "cache-warm"),
    }
    em, fs = "electricitymaps", f"file:{csv_path}"
    start, end = window()
    figures: dict[str, Any] = {}

    def em_call() -> Any:
        return step_series(LOCATION, start, end, spec=em, env=env, timeout_s=args.timeout)

    def fs_call() -> Any:
        return step_series(LOCATION, start, end, spec=fs, env=env, timeout_s=args.timeout)

    _check(em_call(), "electricitymaps")  # fills the cache file
    _check(fs_call(), "file")  # parses the file once in this process
    header(f"S1 warm cache: added time of step_series over the table's ({args.calls} pairs)")
    asked = len(server.requests)
    figures["em_warm"] = row("electricitymaps (cache file hit)", paired(em_call, args.calls)[0])
    hits = len(server.requests) == asked
    print(f"  {'':<44}requests to the server during S1: {len(server.requests) - asked}")
    added, table = paired(fs_call, args.calls)
    figures["file_warm"] = row("file:PATH (8760 h, parsed)", added)
    print(f"  {'':<44}the table's own step_series: median {_ms(statistics.median(table))}")

    def em_now() -> Any:  # what a stop asks: a window ending now, not answered yet
        s, e = window(datetime.now(timezone.utc) + timedelta(minutes=5))
        return step_series(LOCATION, s, e, spec=em, env=env, timeout_s=args.timeout)

    asked = len(server.requests)
    added = paired(em_now, args.cold)[0]
    note = f"{len(server.requests) - asked} requests"
    figures["em_now"] = row("electricitymaps, warm folder, window to now", added, note)
    series = fs_call()[0]
    steps = [(i * 3600.0 / MAX_POINTS, 1.0e-6) for i in range(MAX_POINTS)]
    profile = record_profile(steps, 3600.0, MAX_POINTS * 1.0e-6)

    def price() -> Any:
        return price_profile(profile, start, 3600.0, series, 1.1)

    label = f"pricing with the series ({MAX_POINTS} intervals)"
    figures["price"] = row(label, paired(price, args.calls)[0])

    header(f"S2 cold cache: added time of step_series over the table's ({args.cold} pairs)")
    folders = iter(range(10**6))

    def em_cold() -> Any:
        cold = {**env, "CARBONPIPE_CACHE_DIR": str(tmp / f"cold-{next(folders)}")}
        return step_series(LOCATION, start, end, spec=em, env=cold, timeout_s=args.timeout)

    asked = len(server.requests)
    added = paired(em_cold, args.cold)[0]
    note = f"{len(server.requests) - asked} requests"
    figures["em_cold"] = row("electricitymaps (empty folder, 1 request)", added, note)
    added = paired(fs_call, args.cold, before=file_source._CACHE.clear)[0]
    figures["file_cold"] = row("file:PATH (first parse in the process)", added)
    figures["cache_hits"] = hits
    return figures


def _settle(*, clear: bool = True) -> None:
    """Wait for fetches a deadline abandoned (each ends at its own deadline, recording the
    failure), then forget failures unless ``clear`` is False."""
    for thread in threading.enumerate():
        if thread.name == "carbonpipe-intensity":
            thread.join(10)
    if clear:
        intensity_cache._failed.clear()


def deadlines(args: argparse.Namespace, tmp: Path) -> list[tuple[str, float, float, str]]:
    """S3: hung and slow servers; (case, worst seconds, then-quiet seconds, reason)."""
    start, end = window()
    out = []
    for case in ("hung", "slow"):
        server = _QuietServer(_SlowHandler)
        server.mode = "hang" if case == "hung" else "ok"
        server.delay_s = 2 * args.timeout if case == "slow" else 0.0
        with server:
            times: list[float] = []
            why: str | None = None
            for i in range(args.trials):
                _settle()  # each trial meets the server afresh
                env = {
                    "ELECTRICITYMAPS_API_URL": server.url,
                    "ELECTRICITYMAPS_API_TOKEN": api_servers.EM_TOKEN,
                    "CARBONPIPE_CACHE_DIR": str(tmp / f"{case}-{i}"),
                }
                t0 = time.perf_counter()
                series, why = step_series(
                    LOCATION, start, end, spec="electricitymaps", env=env, timeout_s=args.timeout
                )
                times.append(time.perf_counter() - t0)
                if series is not None or not why:
                    raise SystemExit(f"{case} server: expected a fallback, got {series!r}")
            _settle(clear=False)  # the next step in this process, within the quiet minute
            t0 = time.perf_counter()
            step_series(
                LOCATION, start, end, spec="electricitymaps", env=env, timeout_s=args.timeout
            )
            quiet = time.perf_counter() - t0
            out.append((case, max(times), quiet, str(why)))
            print(
                f"  {case + ' server':<14} worst {max(times):.3f} s, median "
                f"{statistics.median(times):.3f} s of {args.trials} for a {args.timeout:g} s "
                f"deadline; fell back (series None); next call {quiet * 1000:.2f} ms"
            )
            print(f"  {'':<14} reason: {str(why)[:150]}")
    _settle()
    return out


def end_to_end(args: argparse.Namespace, tmp: Path, server: Any, csv_path: Path) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CARBONPIPE_")}
    base.update(
        ELECTRICITYMAPS_API_URL=server.url,
        ELECTRICITYMAPS_API_TOKEN=api_servers.EM_TOKEN,
        CARBONPIPE_CACHE_DIR=str(tmp / "cache-e2e"),
        PYTHONPATH=str(ROOT),
    )
    variants = {"table": None, "electricitymaps": "electricitymaps", "file": f"file:{csv_path}"}

    def trial(name: str) -> dict[str, Any]:
        env = dict(base)
        if variants[name]:
            env["CARBONPIPE_INTENSITY_SOURCE"] = str(variants[name])
        store = tmp / f"store-{name}"
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", TRIAL, str(store)], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{name} trial failed:\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["wall_s"] = wall
        return result

    for name in variants:  # warms the cache folder and every module's bytecode
        first = trial(name)
        print(f"  first {name:<16} intensity_source.kind={first['kind']} {first['errors']}")
    rounds: list[dict[str, dict[str, Any]]] = []
    rng = random.Random(17)
    for _ in range(args.rounds):
        order = list(variants)
        rng.shuffle(order)
        rounds.append({name: trial(name) for name in order})
    cols = ("start, table", "stop, table", "added start", "added stop", "added wall")
    print(f"  {'':<16}" + "".join(f"{c:>14}" for c in cols) + f"  ({args.rounds} rounds)")
    out = {}
    for name in list(variants)[1:]:
        figures = [statistics.median(r["table"][k] for r in rounds) for k in ("start_s", "stop_s")]
        for key in ("start_s", "stop_s", "wall_s"):
            figures.append(statistics.median(r[name][key] - r["table"][key] for r in rounds))
        kinds = {r[name]["kind"] for r in rounds}
        print(f"  {name:<16}" + "".join(f"{_ms(f):>14}" for f in figures) + f"  kind={kinds}")
        out[name] = tuple(figures[2:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="warm pairs per source")
    parser.add_argument("--cold", type=int, default=30, help="cold pairs per source")
    parser.add_argument("--timeout", type=float, default=1.0, help="the source's deadline, s")
    parser.add_argument("--trials", type=int, default=3, help="hung/slow trials each")
    parser.add_argument("--rounds", type=int, default=9, help="end-to-end rounds (0: skip)")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"python {sys.version.split()[0]}; step at gcp/europe-west1 (zone BE); "
        f"deadline {args.timeout:g} s"
    )
    tmp = Path(tempfile.mkdtemp(prefix="carbonpipe-bench-sources-"))
    began = time.perf_counter()
    try:
        csv_path = tmp / "be-year.csv"
        write_year(csv_path, datetime.now(timezone.utc) + timedelta(hours=2))
        with api_servers.electricitymaps() as server:
            figures = in_process(args, tmp, server, csv_path)
            print(f"\nS3 deadline {args.timeout:g} s (electricitymaps, empty cache folder)")
            bounded = deadlines(args, tmp)
            e2e = {}
            if args.rounds > 0:
                print("\nS4 end to end: fresh-process CarbonTracker step, cache folder warm")
                e2e = end_to_end(args, tmp, server, csv_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\nverdicts")
    for key, name in (("em_warm", "electricitymaps"), ("file_warm", "file:PATH")):
        f = figures[key]
        ok = "met" if f["median"] <= 1e-3 else "NOT met"
        tail = "within it too" if f["p90"] <= 1e-3 else "over it"
        print(
            f"  warm <= 1 ms, {name}: {ok} (median {f['median'] * 1e3:.3f} ms; "
            f"p90 {f['p90'] * 1e3:.3f} ms, {tail})"
        )
    if not figures["cache_hits"]:
        print("  warm: some S1 calls reached the server (the cache missed)")
    for key, name in (("em_cold", "electricitymaps"), ("file_cold", "file:PATH")):
        f = figures[key]
        ok = "bounded" if f["max"] <= args.timeout else "OVER the deadline"
        print(
            f"  cold, {name}: {ok} (worst {f['max'] * 1e3:.1f} ms, median "
            f"{f['median'] * 1e3:.1f} ms; deadline {args.timeout * 1e3:.0f} ms)"
        )
    for case, worst, quiet, _ in bounded:
        over = worst - args.timeout
        ok = "bounded" if over <= 0.05 else "NOT bounded"
        print(
            f"  {case} server: {ok} by the deadline (worst {worst:.3f} s for {args.timeout:g} s, "
            f"{over * 1e3:+.1f} ms; the next call {quiet * 1e3:.2f} ms)"
        )
    for name, (start, stop, wall) in e2e.items():
        print(
            f"  end to end, {name}: start {start * 1e3:+.2f} ms, stop {stop * 1e3:+.2f} ms, "
            f"process wall {wall * 1e3:+.1f} ms"
        )
    print(
        f"\nload average at the end: {os.getloadavg()[0]:.2f}; "
        f"ran {time.perf_counter() - began:.0f} s"
    )


if __name__ == "__main__":
    main()
