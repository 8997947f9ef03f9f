"""Gate decision time with 10 k, 100 k and 1 M charges in the budget's period.

A quarter budget on ``pipeline:bench``, the clock at 20 December 12:00 UTC: 80 closed days
(1 October to 19 December) and today. The charges are written straight into the store's layout,
with the bytes the ledger writes (``charge_record``'s body), spread evenly over the days and 8
steps, plus a late marker for one charge in a thousand (a step that ended just before a
midnight). Each decision is a :meth:`BudgetGate.reserve` of the step's estimate (the step's last
run), released untimed after. The first decision lists every closed day and writes its rollup,
and finds the step's last run by listing its month and writes its pointer; the next ones read
rollups and the pointer, and list only today.

Then the figure after the nightly job: the same 80 closed days, rolled up first as the nightly
ESG job does (:func:`roll_up_all`, timed on its own), the step's last-run pointer there as the
charge path leaves it (set untimed), then the first decision and the next ones.

Then, for flatness, 100 k charges with 1 000 of them today and the rest spread over 10, 40 or
80 closed days: the decision should not grow with the number of closed days.

Run: ``python bench/bench_gate_scale.py [--sizes 10000,100000,1000000] [--nightly 1000000]
[--flat 10,40,80] [--moto 10000] [--repeat 7]``. The clock is in the past: a rollup is written
only for a day closed by the wall clock. Local folder under a temp folder; moto's S3 on 127.0.0.1 (requests serialised
as in ``bench_ledger.py``). moto answers each list request by scanning every key of the bucket
(``moto/s3/models.py``, ``list_objects``), so past ~10 k charges its figures measure moto: at
100 k one listing of one day outlasts the store's 5 s deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

from carbonpipe.budgets.budget import Budget  # noqa: E402
from carbonpipe.budgets.charges import CHARGE_SCHEMA, late_marker_key  # noqa: E402
from carbonpipe.budgets.gate import BudgetGate  # noqa: E402
from carbonpipe.budgets.latest import last_run  # noqa: E402
from carbonpipe.budgets.ledger import BudgetLedger  # noqa: E402
from carbonpipe.budgets.period import period_window  # noqa: E402
from carbonpipe.budgets.rollup import period_usage, roll_up_all  # noqa: E402
from carbonpipe.stores.base import Store  # noqa: E402
from carbonpipe.stores.local import LocalStore  # noqa: E402

NOW = datetime(2025, 12, 20, 12, 0, tzinfo=timezone.utc)
FIRST = date(2025, 10, 1)
STEPS = [f"step-{i}" for i in range(8)]
BUDGET = Budget(scope="pipeline:bench", period="quarter", limit_kg_co2e=1e9)
LATE_EVERY = 1000


def _charges(total: int, closed_days: int, today: int | None) -> list[tuple[str, bytes]]:
    """(key, bytes) of ``total`` charges: ``today`` of them today (default: an even share)."""
    days = [NOW.date() - timedelta(days=closed_days - i) for i in range(closed_days)]
    if today is None:
        today = total // (closed_days + 1)
    out: list[tuple[str, bytes]] = []
    for i in range(total):
        day = NOW.date() if i < today else days[(i - today) % closed_days]
        step = STEPS[i % len(STEPS)]
        rid = uuid.UUID(int=i + 1).hex
        ng = 1_000_000 + (i * 7919) % 9_000_000
        hour = 9 if day == NOW.date() else 10 + i % 12
        ended = f"{day.isoformat()}T{hour:02d}:{i % 60:02d}:00Z"
        body = {
            "schema": CHARGE_SCHEMA,
            "scope": BUDGET.scope,
            "record_id": rid,
            "emissions_kg_co2e": ng / 1e12,
            "emissions_ng": ng,
            "pipeline": "bench",
            "step": step,
            "team": "",
            "run_id": f"run-{i // 8}",
            "ended_at": ended,
            "duration_s": 60.0,
        }
        key = (
            f"budgets/pipeline=bench/charges/date={day.isoformat()}/step={step}/{rid}__{ng}ng.json"
        )
        data = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        out.append((key, data))
        if i % LATE_EVERY == LATE_EVERY - 1 and day != NOW.date():
            out.append((late_marker_key(key), data))
    return out


def _write_local(root: Path, items: list[tuple[str, bytes]]) -> None:
    made: set[Path] = set()
    for key, data in items:
        path = root / key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb") as fh:
            fh.write(data)


def _decide(store: Store) -> Callable[[], float]:
    ledger = BudgetLedger(store, clock=lambda: NOW)
    gate = BudgetGate(ledger, BUDGET, timeout_s=3600)

    def one() -> float:
        started = time.perf_counter()
        held = gate.reserve("bench", "step-0", reservation_id=uuid.uuid4().hex)
        elapsed = time.perf_counter() - started
        ledger.release(held)
        return elapsed * 1000

    return one


def _measure(store: Store, repeat: int) -> tuple[float, float, int]:
    decide = _decide(store)
    first = decide()
    after = statistics.median(decide() for _ in range(repeat))
    usage = period_usage(store, BUDGET.scope, period_window("quarter", NOW), NOW)
    return first, after, usage.count


def _local_row(total: int, closed: int, today: int | None, repeat: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="cp-gate-scale-"))
    try:
        items = _charges(total, closed, today)
        t0 = time.perf_counter()
        _write_local(tmp, items)
        wrote = time.perf_counter() - t0
        first, after, counted = _measure(LocalStore(tmp), repeat)
        assert counted == total, (counted, total)
        share = total // (closed + 1) if today is None else today
        return (
            f"local  {total:>9,} charges  {closed:>3} closed days  {share:>7,} today   "
            f"first {first:>9.1f} ms   then {after:>7.1f} ms (median)   "
            f"[written in {wrote:.0f} s]"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _nightly_row(total: int, repeat: int) -> str:
    """The first decision of the day after the nightly job rolled up the closed days."""
    tmp = Path(tempfile.mkdtemp(prefix="cp-gate-nightly-"))
    try:
        items = _charges(total, 80, None)
        t0 = time.perf_counter()
        _write_local(tmp, items)
        wrote = time.perf_counter() - t0
        store = LocalStore(tmp)
        t0 = time.perf_counter()
        [report] = roll_up_all(store, [BUDGET], now=NOW)
        nightly = time.perf_counter() - t0
        assert report.error is None and report.listed == 80 and not report.unwritten, report
        last_run(store, "bench", "step-0", NOW)  # the pointer, as the charges leave it
        first, after, counted = _measure(store, repeat)
        assert counted == total, (counted, total)
        return (
            f"local  {total:>9,} charges  {80:>3} closed days  {total // 81:>7,} today   "
            f"nightly roll_up {nightly:>6.1f} s, then first {first:>7.1f} ms   "
            f"then {after:>7.1f} ms (median)   [written in {wrote:.0f} s]"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _start_moto() -> tuple[Any, str]:
    """moto's S3 on 127.0.0.1, one request at a time (S3's conditional writes are atomic)."""
    import logging
    import threading

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    inner = getattr(server, "_server", None)
    if inner is not None and hasattr(inner, "app"):
        app, lock = inner.app, threading.Lock()

        def serialised(environ: Any, start_response: Any) -> list[bytes]:
            with lock:
                return list(app(environ, start_response))

        inner.app = serialised
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _moto_row(total: int, repeat: int) -> str:
    from carbonpipe.stores.s3 import S3Store

    server, endpoint = _start_moto()
    try:
        name = f"gate-scale-{uuid.uuid4().hex[:8]}"
        store = S3Store(name, "carbon", endpoint_url=endpoint)
        store.client.create_bucket(Bucket=name)
        items = _charges(total, 80, None)
        t0 = time.perf_counter()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda kv: store.put_if_absent(kv[0], kv[1]), items))
        wrote = time.perf_counter() - t0
        first, after, counted = _measure(store, repeat)
        assert counted == total, (counted, total)
        return (
            f"moto   {total:>9,} charges  {80:>3} closed days  {total // 81:>7,} today   "
            f"first {first:>9.1f} ms   then {after:>7.1f} ms (median)   "
            f"[written in {wrote:.0f} s]"
        )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument(
        "--nightly", default="1000000", help="sizes after the nightly rollup ('' for none)"
    )
    parser.add_argument("--moto", default="10000", help="sizes on moto's S3 ('' for none)")
    parser.add_argument("--flat", default="10,40,80", help="closed days at 100 k ('' for none)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"quarter budget, clock {NOW:%Y-%m-%d %H:%M} UTC; decision = gate.reserve")
    for size in [int(s) for s in args.sizes.split(",") if s]:
        print(_local_row(size, 80, None, args.repeat), flush=True)
    for size in [int(s) for s in args.nightly.split(",") if s]:
        print(_nightly_row(size, args.repeat), flush=True)
    for closed in [int(s) for s in args.flat.split(",") if s]:
        print(_local_row(100_000, closed, 1000, args.repeat), flush=True)
    for size in [int(s) for s in args.moto.split(",") if s]:
        print(_moto_row(size, args.repeat), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
