"""Benchmark the ESG aggregation: records -> compaction -> aggregate, next to pandas over JSON.

    python bench/bench_esg.py                     # 1,000,000 records (several minutes, ~5 GB disk)
    python bench/bench_esg.py --records 100000    # quicker
    python bench/bench_esg.py --keep DIR          # keep the generated store in DIR

What it does, each measured step in its own child process (wall time, and peak RSS read with
``resource.getrusage(RUSAGE_CHILDREN)`` by a wrapper whose only child is that step):

1. generate N step records over 2026-Q4 as JSON files in a local store (the tracker's layout:
   ``records/v2/date=.../pipeline_key=.../<id>.json``, bytes as ``Record.to_json`` writes them);
2. ``compact``: the nightly JSON -> Parquet compaction of every day (one night does one day;
   the whole quarter at once is the worst case);
3. ``aggregate``: ``esg.aggregate`` over the quarter (lists every JSON key to catch records the
   parts lack, reads the 92 parts) - the <= 10 s / <= 1 GiB target;
4. ``report``: aggregate + ``write_report`` (json, csv, html, charts);
5. ``late``: aggregate again after adding 1,000 records to compacted days (the JSON path);
6. ``pandas``: the do-it-by-hand baseline - every JSON file through ``json.load``, a pandas
   DataFrame and a groupby - on ``--pandas-records`` records (default 100,000), extrapolated
   linearly to N and labelled so.

Results are checked: the aggregate's totals must equal the generator's exact integer totals.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PERIOD = "2026-Q4"
TEAMS = {
    "ranking": ["rank-train", "rank-eval", "rank-features"],
    "vision": ["detect-train", "segment-train", "vision-batch"],
    "nlp": ["llm-finetune", "embed-index", "nlp-eval"],
    "search": ["query-embed", "ann-rebuild"],
    "ads": ["ctr-train"],
}
STEPS = ["prepare", "train", "evaluate", "publish"]
LOCATIONS = [
    ("gcp", "us-central1", "USA", 432.0, 0.25),
    ("gcp", "europe-west1", "BEL", 126.43, 0.2),
    ("aws", "us-east-1", "USA", 379.0, 0.2),
    ("azure", "westeurope", "NLD", 268.0, 0.15),
    ("gcp", "europe-west9", "FRA", 15.83, 0.1),
    (None, None, "DEU", 381.0, 0.1),
]
METHODS = [("rapl", 0.55), ("nvml", 0.25), ("cpu_load", 0.1), ("estimate", 0.1)]


def _pick(rng: random.Random, weighted: list[Any]) -> Any:
    return rng.choices(weighted, weights=[w[-1] for w in weighted])[0]


def generate(root: Path, n: int, seed: int = 7, *, write: bool = True) -> dict[str, int]:
    """Write ``n`` record files; return the exact integer totals the aggregate must reproduce."""
    from datetime import date, timedelta

    from carbonpipe.record import Record, make_record_id, record_key
    from carbonpipe.units import kg_to_ng, kwh_to_nwh

    rng = random.Random(seed)
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(92)]
    pipelines = [(team, p) for team, ps in TEAMS.items() for p in ps]
    made_dirs: set[Path] = set()
    totals = {"records": 0, "emissions_ng": 0, "total_nwh": 0}
    run = 0
    i = 0
    while i < n:
        run += 1
        team, pipeline = rng.choice(pipelines)
        day = days[run * 92 // max(1, n // len(STEPS) + 1) % 92]
        provider, region, country, intensity, _ = _pick(rng, LOCATIONS)
        for step in STEPS:
            if i >= n:
                break
            failed = rng.random() < 0.03
            attempts = [1, 2] if failed else [1]
            for attempt in attempts:
                if i >= n:
                    break
                method = _pick(rng, METHODS)[0]
                cpu = round(rng.uniform(0.001, 0.2), 6)
                gpu = round(rng.uniform(0.0, 1.5), 6) if step == "train" else 0.0
                ram = round(cpu * 0.3, 6)
                remote = round(rng.uniform(0.0, 0.05), 6) if step == "evaluate" else 0.0
                remote_kg = round(remote * 0.2, 9)
                pue = 1.1 if provider else 1.4
                local = cpu + gpu + ram
                emissions = local * pue * intensity / 1000 + remote_kg
                rid = make_record_id("bench", pipeline, f"run-{run}", step, attempt)
                status = "failed" if (failed and attempt == 1) else "succeeded"
                alerts = []
                if rng.random() < 0.005:
                    alerts.append(
                        {
                            "kind": "carbon_regression",
                            "action": "warn",
                            "pipeline": pipeline,
                            "step": step,
                            "emissions_kg_co2e": emissions,
                            "baseline_mean_kg_co2e": emissions / 1.5,
                            "increase_percent": 50.0,
                        }
                    )
                rec = {
                    "schema": "carbonpipe.record/2",
                    "record_id": rid,
                    "project": "bench",
                    "experiment": "",
                    "pipeline": pipeline,
                    "run_id": f"run-{run}",
                    "step": step,
                    "team": team,
                    "attempt": attempt,
                    "labels": {},
                    "started_at": f"{day}T10:00:00.000000Z",
                    "ended_at": f"{day}T10:{i % 60:02d}:00.000000Z",
                    "duration_s": 60.0 * (i % 60 + 1),
                    "status": status,
                    "energy_kwh": {
                        "cpu": cpu,
                        "gpu": gpu,
                        "ram": ram,
                        "remote": remote,
                        "total": local + remote,
                    },
                    "power_w": {"cpu": 65.0, "gpu": 300.0 if gpu else 0.0, "ram": 10.0},
                    "pue": pue,
                    "intensity_g_per_kwh": intensity,
                    "emissions_kg_co2e": emissions,
                    "location": {
                        "provider": provider,
                        "region": region,
                        "country_iso": country,
                        "detected_by": "metadata" if provider else "default",
                    },
                    "intensity_source": {
                        "name": "carbonpipe intensity table",
                        "vintage": "2025",
                        "kind": "cloud_region" if provider else "country",
                    },
                    "measurement": {"method": method, "tracking_mode": "process"},
                    "remote": [{"energy_kwh": remote, "emissions_kg_co2e": remote_kg}]
                    if remote
                    else [],
                    "tracking_errors": [],
                    "alerts": alerts,
                }
                path = root / record_key(day.isoformat(), pipeline, rid)
                if write and path.parent not in made_dirs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(path.parent)
                if write:
                    # Through Record: every field of record/2, typed, as the tracker writes it.
                    path.write_bytes(Record.from_dict(rec).to_json())
                totals["records"] += 1
                totals["emissions_ng"] += kg_to_ng(emissions)
                totals["total_nwh"] += kwh_to_nwh(local + remote)
                i += 1
    return totals


# -- the measured steps (each runs in its own process) ------------------------------------------


def task_compact(root: str) -> dict[str, Any]:
    from datetime import datetime, timezone

    from carbonpipe.esg.compaction import compact

    done = compact(root, PERIOD, now=datetime(2027, 1, 3, tzinfo=timezone.utc))
    return {"days": sum(c.written for c in done), "records": sum(c.added for c in done)}


def task_aggregate(root: str) -> dict[str, Any]:
    from carbonpipe.esg import aggregation as esg

    agg = esg.aggregate(root, PERIOD)
    t = agg.totals()
    return {
        "records": t.records,
        "emissions_ng": t._s("emissions_ng"),
        "total_nwh": t._s("total_nwh"),
        "compacted": agg.stats.compacted_records,
        "json": agg.stats.json_records,
        "cube_rows": agg.cube.num_rows,
    }


def task_report(root: str) -> dict[str, Any]:
    from carbonpipe.esg import aggregate, write_report

    t0 = time.perf_counter()
    agg = aggregate(root, PERIOD)
    t1 = time.perf_counter()
    uris = write_report(root, agg, config={})
    return {"aggregate_s": t1 - t0, "write_s": time.perf_counter() - t1, "artifacts": len(uris)}


def task_pandas(root: str, limit: int) -> dict[str, Any]:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    base = Path(root) / "records" / "v2"
    for dirpath, _, files in sorted(os.walk(base)):
        for name in sorted(files):
            if len(rows) >= limit:
                break
            with open(os.path.join(dirpath, name), "rb") as fh:
                rows.append(json.load(fh))
    df = pd.json_normalize(rows)
    df["date"] = df["ended_at"].str[:10]
    keys = ["date", "team", "pipeline", "step", "location.provider", "location.region"]
    sums = ["energy_kwh.cpu", "energy_kwh.gpu", "energy_kwh.ram", "energy_kwh.remote"]
    sums += ["energy_kwh.total", "emissions_kg_co2e", "duration_s"]
    out = df.groupby(keys, dropna=False)[sums].sum()
    return {
        "records": len(rows),
        "groups": len(out),
        "emissions_kg": float(out["emissions_kg_co2e"].sum()),
    }


def _worker(argv: list[str]) -> None:
    task, root, *rest = argv
    t0 = time.perf_counter()
    if task == "pandas":
        result = task_pandas(root, int(rest[0]))
    else:
        result = {"compact": task_compact, "aggregate": task_aggregate, "report": task_report}[
            task
        ](root)
    result["wall_s"] = time.perf_counter() - t0
    print(json.dumps(result))


def _measure(argv: list[str]) -> None:
    # Its only child is the worker, so RUSAGE_CHILDREN's peak RSS is the worker's own.
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *argv], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def measure(*argv: str) -> dict[str, Any]:
    """Run one step in a fresh process tree and return its result, time and peak RSS."""
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", *argv], capture_output=True, text=True
    )
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{argv[0]} failed")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {argv[0]}: {result['wall_s']:.2f} s, {result['peak_rss_mib']:.0f} MiB", flush=True)
    return result


def add_late_records(root: Path, n: int) -> None:
    """Add ``n`` records to already compacted days (a spool replay after the nightly job)."""
    from carbonpipe.record import record_key

    src = sorted((root / "records" / "v2").glob("date=2026-10-1*/pipeline_key=*/*.json"))[:n]
    for path in src:
        rec = json.loads(path.read_bytes())
        rec["record_id"] = "late" + rec["record_id"][4:]
        dest = root / record_key(rec["ended_at"][:10], rec["pipeline"], rec["record_id"])
        dest.write_bytes(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return _worker(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        return _measure(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--pandas-records", type=int, default=100_000)
    ap.add_argument("--keep", help="generate into (and keep) this folder")
    args = ap.parse_args()
    if args.records < 1000:
        ap.error("--records must be at least 1000 (the late-record check adds 1,000)")
    root = Path(args.keep or tempfile.mkdtemp(prefix="carbonpipe-bench-"))
    marker = root / "bench-totals.json"
    try:
        saved = json.loads(marker.read_text()) if marker.is_file() else {}
        if saved.get("n") == args.records:
            print(f"reusing the {args.records:,} records generated in {root}", flush=True)
            expected = saved["totals"]
            # Back to the state right after generation: no parts, no late records, no report.
            shutil.rmtree(root / "records" / "compact", ignore_errors=True)
            shutil.rmtree(root / "esg", ignore_errors=True)
            for stale in (root / "records" / "v2").glob("date=*/pipeline_key=*/late*.json"):
                stale.unlink()
        else:
            print(f"generating {args.records:,} records in {root} ...", flush=True)
            t0 = time.perf_counter()
            expected = generate(root, args.records)
            marker.write_text(json.dumps({"n": args.records, "totals": expected}))
            print(f"  generated in {time.perf_counter() - t0:.1f} s", flush=True)

        pd_res = measure("pandas", str(root), str(min(args.pandas_records, args.records)))
        scale = args.records / pd_res["records"]
        comp = measure("compact", str(root))
        agg = measure("aggregate", str(root))
        for name in ("records", "emissions_ng", "total_nwh"):
            if agg[name] != expected[name]:
                raise SystemExit(f"aggregate {name} = {agg[name]}, generator says {expected[name]}")
        rep = measure("report", str(root))
        add_late_records(root, 1000)
        late = measure("aggregate", str(root))
        if late["records"] != expected["records"] + 1000 or late["json"] != 1000:
            raise SystemExit(f"late records not counted exactly once: {late}")

        n = args.records
        print()
        print(
            f"ESG aggregation benchmark: {n:,} records, {PERIOD}, local store, {os.cpu_count()} CPUs"
        )
        print(f"{'step':<44}{'time':>10}{'peak RSS':>12}")

        def row(label: str, seconds: float, rss: float) -> None:
            print(f"{label:<44}{seconds:>9.2f}s{rss:>9.0f} MiB")

        row(
            f"compact all 92 days ({comp['records']:,} JSON -> Parquet)",
            comp["wall_s"],
            comp["peak_rss_mib"],
        )
        row(
            f"  = on average per day (~{n // 92:,} records)",
            comp["wall_s"] / 92,
            comp["peak_rss_mib"],
        )
        row(
            f"aggregate {agg['records']:,} (parts + JSON listing)",
            agg["wall_s"],
            agg["peak_rss_mib"],
        )
        row("  same, whole process incl. imports", agg["process_s"], agg["peak_rss_mib"])
        row("aggregate + write report (json/csv/html/png)", rep["wall_s"], rep["peak_rss_mib"])
        row("aggregate with 1,000 late JSON records", late["wall_s"], late["peak_rss_mib"])
        row(
            f"pandas over JSON, {pd_res['records']:,} records (measured)",
            pd_res["wall_s"],
            pd_res["peak_rss_mib"],
        )
        row(
            f"pandas over JSON, {n:,} records (x{scale:g}, extrapolated)",
            pd_res["wall_s"] * scale,
            pd_res["peak_rss_mib"] * scale,
        )
        ok = agg["wall_s"] <= 10 and agg["peak_rss_mib"] <= 1024
        print(
            f"\ntarget (<= 10 s, <= 1 GiB for 1 M records): {'met' if ok else 'NOT met'} at {n:,} records"
        )
        print(
            f"totals checked: {agg['records']:,} records, {agg['emissions_ng'] / 1e12:.6f} kg CO2e (exact)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
