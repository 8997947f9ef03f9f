"""Stores with variety for the SQL tests: pipelines whose names a key cannot hold, labels,
GPU and CPU-only steps, awkward figures, records of the old layout and schema, late records."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from carbonpipe.esg import compaction as esg_compaction
from carbonpipe.record import Record, legacy_record_key
from carbonpipe.stores.local import LocalStore
from tests.esg.test_esg import make_record

PIPELINES = ("ranking v2/train", "ranking_v2_train", "détection", "train", "2024")
DAYS = ("2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23")
# Figures at the edges of the exact conversion: a half nanogram, below 0.01 ng, a tonne.
AWKWARD_KG = (2.5e-12, 1.5e-12, 7e-15, 1e-13, 1234.5678901234567, 0.1 + 0.2, 1 / 3)


def _record(rng: random.Random, i: int, day: str) -> Record:
    pipeline = PIPELINES[i % len(PIPELINES)]
    gpu = rng.choice([0.0, rng.uniform(0, 3)])
    rec = make_record(
        pipeline,
        rng.choice(["prep", "fit", "eval [fold 1]"]),
        rng.choice(["ranking", "vision", "ml/ops"]),
        day,
        f"run-{i // 3}",
        cpu=rng.uniform(0, 2) * 10 ** rng.randint(-9, 0),
        gpu=gpu,
        ram=rng.random() * 0.1,
        remote_kwh=rng.choice([0.0, 1e-6]),
        remote_kg=rng.choice([0.0, 3e-7]),
        pue=rng.choice([1.0, 1.1, 1.58]),
        intensity=rng.uniform(10, 800),
        status=rng.choice(["succeeded", "succeeded", "failed"]),
        method="nvml" if gpu else rng.choice(["rapl", "cpu_load", "estimate"]),
        region=rng.choice(["us-central1", "europe-west9", None]),
        attempt=1 + i % 2,
        hour=1 + i % 23,
        emissions_kg=AWKWARD_KG[i % len(AWKWARD_KG)] if i % 5 == 0 else None,
    )
    labels = {"owner": f"team {i % 3}", "cost/center": "42"} if i % 4 else {}
    return Record.from_dict({**rec.to_dict(), "labels": labels})


def _v1_document(rec: Record) -> bytes:
    """``rec`` as carbonpipe.record/1 wrote it: whole figures as ints, optional fields left out."""
    data = rec.to_dict()
    data["schema"] = "carbonpipe.record/1"
    for name in ("pue", "duration_s"):
        data[name] = int(data[name]) if float(data[name]).is_integer() else data[name]
    for name in ("labels", "remote", "tracking_errors", "alerts"):
        data.pop(name, None)
    data["measurement"] = {"method": data["measurement"]["method"]}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def build(root: Path, *, seed: int = 7, records: int = 60) -> LocalStore:
    """A store of ``records`` varied records over four days; the first two days compacted, then
    records arrive late for them; some records in the v1 layout, one in both layouts."""
    rng = random.Random(seed)
    store = LocalStore(root)
    recs = [_record(rng, i, DAYS[i % len(DAYS)]) for i in range(records)]
    late = [r for r in recs if r.date in DAYS[:2]][-4:]  # delivered after compaction
    on_time = [r for r in recs if r not in late]
    for i, rec in enumerate(on_time):
        if i % 7 == 3:  # an earlier version's key and schema
            store.put_if_absent(
                legacy_record_key(rec.date, rec.pipeline, rec.record_id), _v1_document(rec)
            )
        elif i % 11 == 5:  # a migration half-way: the same record under both layouts
            store.put_if_absent(rec.key, rec.to_json())
            store.put_if_absent(
                legacy_record_key(rec.date, rec.pipeline, rec.record_id), rec.to_json()
            )
        else:
            store.put_if_absent(rec.key, rec.to_json())
    for day in DAYS[:2]:
        assert esg_compaction.compact_day(store, day).written
    for rec in late:
        store.put_if_absent(rec.key, rec.to_json())
    return store


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``carbonpipe ARGS`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "carbonpipe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def report(store: Path) -> dict[str, Any]:
    done = cli("report", "--store", str(store), "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def sql_statements(engine: str, store: Path) -> list[str]:
    """The statements ``carbonpipe sql --engine ENGINE`` prints for ``store``."""
    done = cli("sql", "--engine", engine, "--store", str(store))
    assert done.returncode == 0, done.stderr
    return [s.strip() for s in done.stdout.split(";\n") if s.strip()]
