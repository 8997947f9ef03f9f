"""Charges per second into the budget ledger with 32 concurrent writers, on moto's S3 and Azurite.

Three ways to keep one budget's total, each driven by the same writer threads:

* ``ledger``       carbonpipe's :class:`BudgetLedger`: one create-only object per (scope,
                   record), the amount in the key, the total summed from a listing;
* ``naive``        one JSON document, get -> add -> put with no condition (what hand-rolled
                   budget trackers do): shows the updates it loses;
* ``cas``          one JSON document, get -> add -> put ``If-Match`` the ETag, retried with
                   jittered backoff: loses nothing, but shows the retries each success costs.

moto checks ``If-None-Match``/``If-Match`` and then writes without a lock, so, like the test
suite, the script serialises moto's requests to give it S3's atomic conditional writes.
Azurite (Microsoft's Azure Storage emulator, installed by ``make test`` or ``make bench`` into
``.venv/azurite``) runs in memory; the Azure column is skipped with a note when it is missing.

Writers are threads spread over spawned processes (pods), so that the clients' CPU does not share
a GIL with the server's. Run: ``python bench/bench_ledger.py [--writers 32] [--processes 4]
[--charges 1600] [--updates 640] [--backends s3,azure]``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# The bench measures throughput on a shared machine, not deadlines: give each call a minute.
STORE_TIMEOUT_S = 60

from carbonpipe.budgets.budget import Budget  # noqa: E402
from carbonpipe.budgets.charges import record_scopes  # noqa: E402
from carbonpipe.budgets.ledger import BudgetLedger  # noqa: E402
from carbonpipe.errors import PreconditionFailed  # noqa: E402
from carbonpipe.record import Record  # noqa: E402
from carbonpipe.stores.base import Store  # noqa: E402
from carbonpipe.stores.s3 import S3Store  # noqa: E402

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
LABELS = {"s3": "moto S3", "azure": "Azurite"}


@dataclass(frozen=True)
class Result:
    """One variant's figures."""

    name: str
    writers: int
    attempted: int
    counted: int
    elapsed_s: float
    requests: int
    extra: str = ""

    @property
    def per_s(self) -> float:
        return self.attempted / self.elapsed_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s

    @property
    def lost(self) -> int:
        return self.attempted - self.counted


class _Serialised:
    """WSGI middleware running one request at a time (S3's conditional writes are atomic)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


def _start_moto() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    inner = getattr(server, "_server", None)
    if inner is not None and hasattr(inner, "app"):
        inner.app = _Serialised(inner.app)
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _azurite_binary() -> str | None:
    here = Path(__file__).resolve().parents[1] / ".venv/azurite/node_modules/.bin/azurite-blob"
    for candidate in (os.environ.get("CARBONPIPE_AZURITE", ""), str(here)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("azurite-blob")


def _start_azurite() -> tuple[Any, str]:
    """Azurite's blob service in memory on a free loopback port; (process, account URL)."""
    binary = _azurite_binary()
    if binary is None:
        raise FileNotFoundError("azurite-blob (run `make azurite`)")
    folder = tempfile.mkdtemp(prefix="bench-azurite-")
    atexit.register(shutil.rmtree, folder, True)
    log = Path(folder) / "out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort", "0"]
            + ["--skipApiVersionCheck", "--loose", "--silent"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 60
    while not (found := re.search(r"listens on (http://\S+)", log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)
    endpoint = f"{found.group(1).rstrip('/')}/{AZURITE_ACCOUNT}"
    # Every writer process (spawned, so it inherits the environment) finds the account here.
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    return proc, endpoint


def _open(backend: str, endpoint: str, name: str) -> Store:
    if backend == "azure":
        from carbonpipe.stores.azure import AzureBlobStore

        return AzureBlobStore(name, "carbon", endpoint_url=endpoint, timeout_s=STORE_TIMEOUT_S)
    return S3Store(name, "carbon", endpoint_url=endpoint, timeout_s=STORE_TIMEOUT_S)


def _bucket(backend: str, endpoint: str, name: str) -> Store:
    store = _open(backend, endpoint, name)
    if backend == "azure":
        store.client.create_container()  # type: ignore[attr-defined]
    else:
        store.client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return store


def _in_threads(threads: int, work: Callable[[int], None], first: int = 0) -> None:
    """Run ``work(writer)`` for writers ``first .. first+threads-1``, one thread each."""
    errors: list[BaseException] = []

    def run(w: int) -> None:
        try:
            work(w)
        except BaseException as exc:  # re-raised below, in the calling thread
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(first + t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


def _writer_process(
    backend: str,
    variant: str,
    endpoint: str,
    bucket: str,
    first: int,
    threads: int,
    args: Any,
    barrier: Any,
    out: Any,
) -> None:
    """One pod: its own store client and ``threads`` writers, started at the parent's signal."""
    store = _open(backend, endpoint, bucket)
    work, retries = _WORK[variant](store, args)
    barrier.wait()
    _in_threads(threads, work, first)
    out.put(sum(retries))


def _run_writers(
    backend: str, variant: str, endpoint: str, bucket: str, args: Any
) -> tuple[float, int]:
    """Run ``args.writers`` writers spread over ``args.processes`` processes; return (s, retries)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(args.processes + 1)
    out = ctx.Queue()
    per = args.writers // args.processes
    procs = [
        ctx.Process(
            target=_writer_process,
            args=(backend, variant, endpoint, bucket, p * per, per, args, barrier, out),
        )
        for p in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    retries = sum(out.get() for _ in procs)
    elapsed = time.perf_counter() - start
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        raise RuntimeError(f"{variant}: a writer process failed")
    return elapsed, retries


def _record(i: int, ug: int, team: str) -> Record:
    ended = datetime.now(timezone.utc).isoformat()
    return Record(
        record_id=f"bench{i:06d}",
        project="bench",
        experiment="",
        pipeline="train",
        run_id=f"run-{i % 50}",
        step=f"step{i % 7}",
        team=team,
        attempt=1,
        started_at=ended,
        ended_at=ended,
        duration_s=1.0,
        status="succeeded",
        energy_kwh={"cpu": 0.0, "gpu": 0.0, "ram": 0.0, "remote": 0.0, "total": 0.0},
        power_w={"cpu": 0.0, "gpu": 0.0, "ram": 0.0},
        pue=1.0,
        intensity_g_per_kwh=100.0,
        emissions_kg_co2e=ug / 1e9,
        location={"provider": "", "region": "", "country_iso": "BEL", "detected_by": "argument"},
        intensity_source={"name": "bench", "vintage": "2026", "kind": "country"},
        measurement={"method": "estimate"},
    )


def _amount_ug(i: int) -> int:
    return 1_000 + 37 * i


def _ledger_work(store: Store, args: Any) -> tuple[Callable[[int], None], list[int]]:
    ledger = BudgetLedger(store)

    def work(w: int) -> None:
        for i in range(w, args.charges, args.writers):
            ledger.charge(_record(i, _amount_ug(i), args.team))

    return work, [0]


_DOC_KEY = "budgets/pipeline=train/single.json"


def _naive_work(store: Store, args: Any) -> tuple[Callable[[int], None], list[int]]:
    def work(w: int) -> None:
        for _ in range(args.updates // args.writers):
            doc = json.loads(store.get(_DOC_KEY).data)
            doc["used_ug"] += 1_000
            doc["charges"] += 1
            store.put_artifact(_DOC_KEY, json.dumps(doc).encode(), content_type="application/json")

    return work, [0]


def _cas_work(store: Store, args: Any) -> tuple[Callable[[int], None], list[int]]:
    retries = [0] * args.writers

    def work(w: int) -> None:
        for _ in range(args.updates // args.writers):
            attempt = 0
            while True:
                obj = store.get(_DOC_KEY)
                doc = json.loads(obj.data)
                doc["used_ug"] += 1_000
                doc["charges"] += 1
                try:
                    store.replace(_DOC_KEY, json.dumps(doc).encode(), if_version=obj.version)
                    break
                except PreconditionFailed:
                    retries[w] += 1
                    time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))
                    attempt += 1

    return work, retries


_WORK: dict[str, Callable[[Store, Any], tuple[Callable[[int], None], list[int]]]] = {
    "ledger": _ledger_work,
    "naive": _naive_work,
    "cas": _cas_work,
}


def bench_ledger(backend: str, endpoint: str, args: Any) -> Result:
    """Charge ``args.charges`` records; verify the total from a listing."""
    store = _bucket(backend, endpoint, "bench-ledger")
    elapsed, _ = _run_writers(backend, "ledger", endpoint, "bench-ledger", args)
    budget = Budget(scope="pipeline:train", period="total", limit_kg_co2e=1.0)
    t0 = time.perf_counter()
    status = BudgetLedger(store).status(budget)
    status_ms = 1000 * (time.perf_counter() - t0)
    expected_ug = sum(_amount_ug(i) for i in range(args.charges))
    exact = status.used_kg == expected_ug / 1e9 and status.charges == args.charges
    scopes = [scope.split(":")[0] for scope in record_scopes(_record(0, 0, args.team))]
    return Result(
        "ledger (append-only)",
        args.writers,
        args.charges,
        status.charges if exact else -1,
        elapsed,
        len(scopes) * args.charges,
        f"one PUT per scope ({', '.join(scopes)}); total == expected: {exact}; "
        f"status() over {args.charges} charges: {status_ms:.0f} ms",
    )


def bench_single_document(backend: str, endpoint: str, args: Any, variant: str) -> Result:
    """Update one JSON document from every writer, unconditionally or by compare-and-swap."""
    bucket = f"bench-{variant}"
    store = _bucket(backend, endpoint, bucket)
    store.put_if_absent(_DOC_KEY, json.dumps({"used_ug": 0, "charges": 0}).encode())
    elapsed, retries = _run_writers(backend, variant, endpoint, bucket, args)
    attempted = (args.updates // args.writers) * args.writers
    counted = json.loads(store.get(_DOC_KEY).data)["charges"]
    if variant == "naive":
        return Result(
            "naive get->add->put", args.writers, attempted, counted, elapsed, 2 * attempted
        )
    return Result(
        "single-doc CAS (If-Match)",
        args.writers,
        attempted,
        counted,
        elapsed,
        2 * (attempted + retries),
        f"{retries / attempted:.1f} retries per success",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--charges", type=int, default=1600, help="records charged to the ledger")
    parser.add_argument("--updates", type=int, default=640, help="updates per single-doc variant")
    parser.add_argument("--processes", type=int, default=4, help="writer processes (pods)")
    parser.add_argument("--team", default="ml", help="team of the records ('' for none)")
    parser.add_argument("--skip-cas", action="store_true", help="leave out the CAS variant")
    parser.add_argument("--backends", default="s3,azure", help="s3, azure or both (s3,azure)")
    args = parser.parse_args(argv)

    # A charge the store could not take within its deadline is spooled, never silently dropped:
    # into a spool of this run's own (the writer processes inherit it), not the user's.
    spool = tempfile.mkdtemp(prefix="bench-ledger-spool-")
    atexit.register(shutil.rmtree, spool, True)
    os.environ["CARBONPIPE_SPOOL_DIR"] = spool
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= set(LABELS):
        parser.error(f"--backends takes {', '.join(LABELS)}, got {args.backends!r}")
    table: dict[str, list[Result]] = {}
    for backend in backends:
        try:
            table[backend] = _bench_backend(backend, args)
        except FileNotFoundError as exc:
            print(f"{LABELS[backend]}: skipped, {exc} not found")
    print(
        f"{args.writers} writers = {args.processes} processes x "
        f"{args.writers // args.processes} threads; {os.cpu_count()} CPUs"
    )
    lost = 0
    for backend, results in table.items():
        print(f"\n== {LABELS[backend]}")
        print(
            f"{'variant':28} {'writers':>7} {'updates':>8} {'per s':>8} {'counted':>8} "
            f"{'lost':>6} {'HTTP req/s':>10}"
        )
        for r in results:
            print(
                f"{r.name:28} {r.writers:7d} {r.attempted:8d} {r.per_s:8.1f} {r.counted:8d} "
                f"{r.lost:6d} {r.requests_per_s:10.0f}"
            )
            if r.extra:
                print(f"{'':28} {r.extra}")
        lost += results[0].lost
    if len(table) > 1:
        print(f"\n{'updates per second (lost)':28}" + "".join(f"{LABELS[b]:>18}" for b in table))
        for i, name in enumerate(r.name for r in next(iter(table.values()))):
            cells = "".join(f"{f'{rs[i].per_s:.1f} ({rs[i].lost})':>18}" for rs in table.values())
            print(f"{name:28}{cells}")
    for backend, results in table.items():
        ok = results[0].lost == 0 and results[0].per_s >= 100
        print(
            f"goal on {LABELS[backend]} (ledger >= 100 charges/s, 0 lost): "
            f"{'met' if ok else 'NOT met'}"
        )
    return 0 if lost == 0 else 1


def _bench_backend(backend: str, args: Any) -> list[Result]:
    """The three variants on one backend's server (started and stopped here)."""
    if backend == "azure":
        proc, endpoint = _start_azurite()
        stop = proc.kill
    else:
        server, endpoint = _start_moto()
        stop = server.stop
    try:
        results = [
            bench_ledger(backend, endpoint, args),
            bench_single_document(backend, endpoint, args, "naive"),
        ]
        if not args.skip_cas:
            results.append(bench_single_document(backend, endpoint, args, "cas"))
    finally:
        stop()
    return results


if __name__ == "__main__":
    raise SystemExit(main())
