"""The nightly ESG job at object-store scale: a quarter on moto's S3 next to the local store.

    python bench/bench_esg_scale.py                              # 1,000,000 compacted + 20,000 new
    python bench/bench_esg_scale.py --records 100000 --new 2000  # quicker

The store is what one that has run the nightly job for a quarter holds on the night of
2027-01-01: 2026-10-01 .. 12-30 already compacted, ``--records`` rows in 91 per-day Parquet
parts (``carbonpipe.compact/4``, written with the compaction's own encoder from generated rows,
not from a million JSON objects), plus ``--new`` JSON records (``carbonpipe.record/2``, the
tracker's ``records/v2/date=D/pipeline_key=K/<id>.json`` keys) for 2026-12-31, the day that
just closed. The job is :func:`carbonpipe.esg.run_nightly` for 2026-Q4 at 2027-01-02T01:00Z:
it compacts every closed day (the new one gets its part), aggregates the quarter and writes
report.json/csv/html and the charts.

Each run happens in a child process (its own peak RSS: ``ru_maxrss`` of that process, so the
generation's memory does not count), once on a local folder and once on moto's S3 server (in
this process, on 127.0.0.1). On S3 the child counts the requests it sends, by kind, with a
botocore ``before-call`` hook. Totals are checked against the generator's exact integers.
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
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

PERIOD = "2026-Q4"
NOW = "2027-01-02T01:00:00+00:00"
NIGHT = "2026-12-31"
BUCKET, PREFIX = "carbonpipe-scale", "carbon"
TEAMS = {
    "ranking": ["rank-train", "rank-eval", "rank-features"],
    "vision": ["detect-train", "segment-train", "vision-batch"],
    "nlp": ["llm-finetune", "embed-index", "nlp-eval"],
    "search": ["query-embed", "ann-rebuild"],
    "ads": ["ctr-train"],
}
STEPS = ["prepare", "train", "evaluate", "publish"]
LOCATIONS = [
    ("gcp", "us-central1", "USA", 432.0),
    ("gcp", "europe-west1", "BEL", 126.43),
    ("aws", "us-east-1", "USA", 379.0),
    ("azure", "westeurope", "NLD", 268.0),
    ("gcp", "europe-west9", "FRA", 15.83),
    (None, None, "DEU", 381.0),
]
METHODS = ["rapl", "rapl", "nvml", "cpu_load", "estimate"]
_OPS = {
    "GetObject": "GET",
    "PutObject": "PUT",
    "ListObjectsV2": "LIST",
    "ListObjects": "LIST",
    "HeadObject": "HEAD",
}


# -- generation --------------------------------------------------------------------------------


def _template(rng: random.Random, k: int) -> dict[str, Any]:
    """One kind of step attempt: everything but its identity and time."""
    pipelines = [(team, p) for team, ps in TEAMS.items() for p in ps]
    team, pipeline = pipelines[k % len(pipelines)]
    step = STEPS[(k // len(pipelines)) % len(STEPS)]
    provider, region, country, intensity = rng.choice(LOCATIONS)
    cpu = round(rng.uniform(0.001, 0.2), 6)
    gpu = round(rng.uniform(0.0, 1.5), 6) if step == "train" else 0.0
    ram = round(cpu * 0.3, 6)
    remote = round(rng.uniform(0.0, 0.05), 6) if step == "evaluate" else 0.0
    remote_kg = round(remote * 0.2, 9)
    pue = 1.1 if provider else 1.4
    emissions = (cpu + gpu + ram) * pue * intensity / 1000 + remote_kg
    alerts = []
    if k % 211 == 0:
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
    return {
        "team": team,
        "pipeline": pipeline,
        "step": step,
        "status": "failed" if k % 37 == 0 else "succeeded",
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
        "method": METHODS[k % len(METHODS)],
        "energy": {"cpu": cpu, "gpu": gpu, "ram": ram, "remote": remote},
        "remote_kg": remote_kg,
        "pue": pue,
        "intensity": intensity,
        "emissions": emissions,
        "alerts": alerts,
    }


def templates(seed: int = 7, n: int = 2048) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_template(rng, k) for k in range(n)]


def make_record(t: dict[str, Any], rid: str, run: str, day: str, minute: int) -> Any:
    """A ``carbonpipe.record/2`` record of template ``t``."""
    from carbonpipe.record import Record

    e = t["energy"]
    return Record(
        record_id=rid,
        project="scale",
        experiment="",
        pipeline=t["pipeline"],
        run_id=run,
        step=t["step"],
        team=t["team"],
        attempt=1,
        started_at=f"{day}T10:00:00.000000Z",
        ended_at=f"{day}T{10 + minute // 60:02d}:{minute % 60:02d}:30.000000Z",
        duration_s=60.0 * minute + 30.0,
        status=t["status"],
        energy_kwh={**e, "total": e["cpu"] + e["gpu"] + e["ram"] + e["remote"]},
        power_w={"cpu": 65.0, "gpu": 300.0 if e["gpu"] else 0.0, "ram": 10.0},
        pue=t["pue"],
        intensity_g_per_kwh=t["intensity"],
        emissions_kg_co2e=t["emissions"],
        location=dict(t["location"]),
        intensity_source=dict(t["intensity_source"]),
        measurement={"method": t["method"], "tracking_mode": "process"},
        remote=[{"energy_kwh": e["remote"], "emissions_kg_co2e": t["remote_kg"]}]
        if e["remote"]
        else [],
        alerts=list(t["alerts"]),
    )


def compacted_parts(
    n: int, days: list[str], seed: int = 7
) -> tuple[dict[str, bytes], dict[str, int]]:
    """``n`` rows spread over ``days`` as their Parquet parts; and the rows' exact totals.

    Each row is one of 2,048 templates (flattened once, with the compaction's own
    ``_records_table``) given its own record id, run, day and times: a million distinct
    records, without a million Python objects.
    """
    import numpy as np
    import pyarrow as pa

    from carbonpipe.esg.compaction import encode_part
    from carbonpipe.esg.rows import _records_table
    from carbonpipe.record import make_record_id

    temps = templates(seed)
    flat = _records_table(
        [make_record(t, f"{k:032x}", "run-0", days[0], 0) for k, t in enumerate(temps)], days[0]
    )  # sorted by record id = template index
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(temps), n)
    counts = np.bincount(pick, minlength=len(temps))
    totals = {"records": n, "emissions_ng": 0, "total_nwh": 0}
    for name, column in (("emissions_ng", "emissions_ng"), ("total_nwh", "energy_total_nwh")):
        values = flat[column].to_pylist()
        totals[name] = sum(int(c) * int(v) for c, v in zip(counts, values, strict=True))
    parts: dict[str, bytes] = {}
    bounds = [n * d // len(days) for d in range(len(days) + 1)]
    for d, day in enumerate(days):
        lo, hi = bounds[d], bounds[d + 1]
        if lo == hi:
            continue
        table = flat.take(pa.array(pick[lo:hi]))
        idx = range(lo, hi)
        runs = [f"run-{i // 4}" for i in idx]
        ids = [make_record_id("scale", "p", runs[j], str(i % 4), 1) for j, i in enumerate(idx)]
        minutes = np.arange(lo, hi) % 600
        base = np.datetime64(f"{day}T10:00:00", "us")
        started = pa.array(np.full(hi - lo, base), pa.timestamp("us", tz="UTC"))
        ended = pa.array(
            base + (minutes * 60 + 30).astype("timedelta64[s]"), pa.timestamp("us", tz="UTC")
        )
        replace = {
            "record_id": pa.array(ids, pa.string()),
            "date": pa.array([day] * (hi - lo), pa.string()),
            "run_id": pa.array(runs, pa.string()),
            "started_at": started,
            "ended_at": ended,
            "duration_s": pa.array(minutes * 60.0 + 30.0, pa.float64()),
        }
        for name, column in replace.items():
            table = table.set_column(table.schema.get_field_index(name), name, column)
        parts[day] = encode_part(table, day, ())
    return parts, totals


def new_records(n: int, day: str, seed: int = 11) -> tuple[dict[str, bytes], dict[str, int]]:
    """``n`` JSON records of ``day`` under their store keys; and their exact totals."""
    from carbonpipe.record import make_record_id
    from carbonpipe.units import kg_to_ng, kwh_to_nwh

    temps = templates(seed)
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    totals = {"records": n, "emissions_ng": 0, "total_nwh": 0}
    for i in range(n):
        t = temps[rng.randrange(len(temps))]
        run = f"night-{i // 4}"
        rec = make_record(
            t, make_record_id("scale", t["pipeline"], run, str(i), 1), run, day, i % 600
        )
        out[rec.key] = rec.to_json()
        totals["emissions_ng"] += kg_to_ng(rec.emissions_kg_co2e)
        totals["total_nwh"] += kwh_to_nwh(rec.energy_kwh["total"])
    return out, totals


def quarter_days() -> list[str]:
    start = date(2026, 10, 1)
    return [(start + timedelta(days=i)).isoformat() for i in range(91)]  # to 2026-12-30


# -- the measured job (child process) -----------------------------------------------------------


def _what(key: str) -> str:
    """What a request's key or prefix is about: a part, a JSON record, a day's listing, other."""
    if key.endswith("part.parquet"):
        return "part"
    if "/records/v2/" in key or "/records/v1/" in key:
        layout = "v1" if "/records/v1/" in key else "v2"
        return f"{layout} record" if key.endswith(".json") else f"{layout} day"
    if "/esg/" in key:
        return "artifact"
    return "other"


def job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec["job"]`` on the store ``spec`` names; its result, time, RSS and requests.

    ``nightly``: :func:`run_nightly` (compaction, aggregation, the report and its artifacts);
    ``esg``: its compaction and aggregation alone (``compact`` then ``aggregate``).
    """
    from datetime import datetime

    from carbonpipe.esg import aggregate, compact, run_nightly

    counts: Counter[str] = Counter()
    if spec["kind"] == "s3":
        from carbonpipe.stores.s3 import S3Store

        store: Any = S3Store(spec["bucket"], PREFIX, endpoint_url=spec["endpoint"])

        def count(model: Any, params: dict[str, Any], **_: Any) -> None:
            op = _OPS.get(model.name, model.name)
            counts[op] += 1
            counts[f"{op} {_what(str(params.get('Key') or params.get('Prefix') or ''))}"] += 1

        store.client.meta.events.register("before-parameter-build.s3", count)
    else:
        from carbonpipe.stores.local import LocalStore

        store = LocalStore(spec["root"])
    now = datetime.fromisoformat(NOW)
    t0 = time.perf_counter()
    if spec["job"] == "nightly":
        result = run_nightly(store, PERIOD, now=now, config={}, out_dir=spec["out"])
    else:
        listings: dict[str, Any] = {}  # as run_nightly: each day listed once
        done = compact(store, PERIOD, now=now, listings=listings)
        agg = aggregate(store, PERIOD, listings=listings)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    requests = dict(counts)
    if spec["job"] == "nightly":
        report = json.loads(Path(spec["out"], "report.json").read_text())  # the exact sums
        summary = report["executive_summary"]
        sums = {
            "records": report["activity"]["step_attempts"],
            "emissions_ng": summary["total_emissions_ng"],
            "total_nwh": summary["total_energy_nwh"],
        }
        compaction, read = result["compaction"], result["read"]
    else:
        total = agg.totals()
        sums = {
            "records": total.records,
            "emissions_ng": total._s("emissions_ng"),
            "total_nwh": total._s("total_nwh"),
        }
        compaction = {
            "days_compacted": sum(c.written for c in done),
            "records_added": sum(c.added for c in done),
        }
        read = {
            "compacted_records": agg.stats.compacted_records,
            "json_records": agg.stats.json_records,
        }
    listing = None
    if spec["kind"] == "s3":  # what a page of a listing costs, for a store that keeps its JSON
        t1 = time.perf_counter()
        keys = sum(1 for _ in store.list(f"records/v2/date={NIGHT}/"))
        listing = {"keys": keys, "s": time.perf_counter() - t1}
    return {
        "wall_s": wall,
        "peak_rss_mib": rss,
        "requests": requests,
        "compaction": compaction,
        "read": read,
        "listing": listing,
        **sums,
    }


def run_job(spec: dict[str, Any], spool: str) -> dict[str, Any]:
    env = dict(os.environ, CARBONPIPE_SPOOL_DIR=spool)
    proc = subprocess.run(
        [sys.executable, __file__, "--job", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the nightly job on {spec['kind']} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the two stores -----------------------------------------------------------------------------


def fill_local(root: Path, parts: dict[str, bytes], new: dict[str, bytes]) -> None:
    from carbonpipe.esg.compaction import PARQUET_TYPE
    from carbonpipe.esg.rows import part_key
    from carbonpipe.stores.local import LocalStore

    store = LocalStore(str(root))
    for day, data in parts.items():
        store.put_if_absent(part_key(day), data, content_type=PARQUET_TYPE)
    for key, data in new.items():
        store.put_if_absent(key, data)


def start_moto() -> tuple[Any, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def fill_s3(endpoint: str, bucket: str, parts: dict[str, bytes], new: dict[str, bytes]) -> None:
    """Create the bucket through the API, then the objects straight in moto's backend (fast)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from carbonpipe.esg.rows import part_key
    from carbonpipe.stores.s3 import S3Store

    store = S3Store(bucket, PREFIX, endpoint_url=endpoint)
    store.client.create_bucket(Bucket=bucket)
    store.close()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for day, data in parts.items():
        backend.put_object(bucket, f"{PREFIX}/{part_key(day)}", data)
    for key, data in new.items():
        backend.put_object(bucket, f"{PREFIX}/{key}", data)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--job":
        print(json.dumps(job(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="rows already compacted")
    ap.add_argument("--new", type=int, default=20_000, help="JSON records of the night")
    ap.add_argument("--stores", default="local,s3", help="local, s3 or both (default)")
    ap.add_argument(
        "--jobs",
        default="nightly,esg",
        help="nightly (run_nightly), esg (its compaction + aggregation alone), or both",
    )
    args = ap.parse_args()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = "testing"  # moto's: no real account is ever reached
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)

    print(f"generating {args.records:,} compacted rows + {args.new:,} JSON records ...", flush=True)
    t0 = time.perf_counter()
    parts, expected = compacted_parts(args.records, quarter_days())
    new, new_totals = new_records(args.new, NIGHT)
    for k in expected:
        expected[k] += new_totals[k]
    size = sum(map(len, parts.values()))
    print(
        f"  {len(parts)} parts ({size / 2**20:.1f} MiB) and {len(new):,} records"
        f" ({sum(map(len, new.values())) / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="carbonpipe-scale-"))
    results: dict[str, dict[str, Any]] = {}
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    server = None
    try:
        for job_name in jobs:
            if "local" in kinds:
                root = tmp / f"store-{job_name}"
                fill_local(root, parts, new)
                print(f"local store: {job_name} ...", flush=True)
                spec = {
                    "kind": "local",
                    "job": job_name,
                    "root": str(root),
                    "out": str(tmp / "out"),
                }
                results[f"local {job_name}"] = run_job(spec, str(tmp / "spool"))
                shutil.rmtree(root, ignore_errors=True)
            if "s3" in kinds:
                if server is None:
                    server, endpoint = start_moto()
                bucket = f"{BUCKET}-{job_name}"
                fill_s3(endpoint, bucket, parts, new)
                print(f"moto S3 ({endpoint}): {job_name} ...", flush=True)
                spec = {"kind": "s3", "job": job_name, "endpoint": endpoint, "bucket": bucket}
                spec["out"] = str(tmp / "out")
                results[f"s3 {job_name}"] = run_job(spec, str(tmp / "spool"))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    n = expected["records"]
    load = os.getloadavg()
    print()
    print(
        f"nightly ESG job, {PERIOD}: {args.records:,} compacted + {args.new:,} new JSON = "
        f"{n:,} records; {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"{'store, job':<14}{'wall':>9}{'peak RSS':>12}  requests (GET / PUT / LIST / HEAD)")
    for name_, r in results.items():
        kind = name_.split()[0]
        for name in ("records", "emissions_ng", "total_nwh"):
            if r[name] != expected[name]:
                raise SystemExit(
                    f"{name_}: {name} = {r[name]}, the generator says {expected[name]}"
                )
        req = r["requests"]
        shown = (
            " / ".join(f"{req.get(op, 0):,}" for op in ("GET", "PUT", "LIST", "HEAD"))
            if kind == "s3"
            else "(files)"
        )
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(req.items()) if " " in k)
        print(f"{name_:<14}{r['wall_s']:>8.1f}s{r['peak_rss_mib']:>8.0f} MiB  {shown}")
        if detail:
            print(f"{'':<14}by what: {detail}")
        if r["listing"]:
            keys, secs = r["listing"]["keys"], r["listing"]["s"]
            print(
                f"{'':<14}listing {keys:,} keys: {secs:.2f} s"
                + (f" ({secs / keys * 1e6:.0f} ms per 1,000-key page)" if keys else "")
            )
        ok = r["wall_s"] <= 60 and r["peak_rss_mib"] <= 1024
        print(
            f"{'':<14}goal (<= 60 s, <= 1 GiB): {'met' if ok else 'NOT met'}; "
            f"{r['compaction']}, {r['read']}"
        )
    print(f"totals checked: {n:,} records, {expected['emissions_ng'] / 1e12:.6f} kg CO2e (exact)")


if __name__ == "__main__":
    main()
