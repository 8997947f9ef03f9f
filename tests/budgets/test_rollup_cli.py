"""``carbonpipe budget rollup``: the nightly rollup ahead of the gates, as a real subprocess.

Charges written through the ledger (the charge path every step uses) over several closed days
of a local-folder store; then the command, ``budget status`` and a gate decision read them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.charges import scope_key
from carbonpipe.budgets.gate import BudgetGate
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.budgets.period import period_window
from carbonpipe.budgets.rollup import closed_before, listed_usage, tally_keys
from carbonpipe.stores.base import Store
from carbonpipe.stores.local import LocalStore
from carbonpipe.units import ng_to_kg
from tests.budgets.test_ledger import _record
from tests.fault_proxy import FaultProxy
from tests.object_servers import S3_BUCKET, STORE_PREFIX

CLI = [sys.executable, "-m", "carbonpipe"]
TRAIN = "pipeline:train"
TEAM = "team:ml"
CONFIG = """\
budgets:
  - scope: pipeline:train
    period: total
    limit_kg_co2e: 1
  - scope: team:ml
    period: month
    limit_kg_co2e: 1
"""


class _ListingStore(LocalStore):
    """A local folder that remembers the prefix of every listing asked of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed: list[str] = []

    def list(self, prefix: str = "") -> Iterator[str]:
        self.listed.append(prefix)
        return super().list(prefix)


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args, capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


def _json(args: list[str]) -> Any:
    done = _cli([*args, "--json"])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _charged(root: Path, now: datetime) -> list[date]:
    """Charges on 12 of the last 14 days (two a day, one of them re-delivered), and one now:
    the closed days that have charges."""
    ledger = BudgetLedger(LocalStore(root))
    days = []
    for back in range(14, 0, -1):
        if back in (4, 9):
            continue  # days with no charge are rolled up too
        day = (now - timedelta(days=back)).date()
        days.append(day)
        for n, step in enumerate(("prep", "fit")):
            ended = f"{day.isoformat()}T{10 + n:02d}:00:00Z"
            record = _record(f"r{back}-{step}", kg=(back + n) * 1.25e-6, ended_at=ended, step=step)
            ledger.charge(record)
            if step == "fit":
                ledger.charge(record)  # delivered twice: one charge
    ended = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ledger.charge(_record("open-day", kg=3e-6, ended_at=ended, step="fit"))
    first_open = closed_before(now)
    return [d for d in days if d < first_open]


def _rollups(root: Path, scope: str) -> list[str]:
    return sorted(LocalStore(root).list(f"budgets/{scope_key(scope)}/rollups/"))


def test_rollup_writes_each_closed_day_once_and_keeps_status_exact(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    root = tmp_path / "store"
    days = _charged(root, now)
    config = tmp_path / "carbon.yaml"
    config.write_text(CONFIG)
    first_open = closed_before(now)
    # The status a gate would see without the nightly job: on a copy, which rolls up itself.
    shutil.copytree(root, tmp_path / "copy")
    base = ["--config", str(config)]
    without = _json(["budget", "status", "--store", str(tmp_path / "copy"), *base])

    first = _json(["budget", "rollup", "--store", str(root), *base])

    by_scope = {(r["scope"], r["period"]): r for r in first}
    assert set(by_scope) == {(TRAIN, "total"), (TEAM, "month")}
    train = by_scope[(TRAIN, "total")]
    closed_train = (first_open - days[0]).days  # every closed day since the first charge
    assert (train["days_listed"], train["days_rolled"]) == (closed_train, 0)
    assert train["error"] is None and train["days_unwritten"] == 0
    assert train["first_open"] == first_open.isoformat()
    month_start = period_window("month", now).start
    assert month_start is not None
    team = by_scope[(TEAM, "month")]
    assert team["days_listed"] == (first_open - month_start.date()).days
    written = _rollups(root, TRAIN)
    assert [k.split("rollups/date=")[1][:10] for k in written] == [
        (days[0] + timedelta(days=i)).isoformat() for i in range(closed_train)
    ]
    charges = f"budgets/{scope_key(TRAIN)}/charges/"
    for key in written:  # each day's totals are its charges', one per record
        body = json.loads((root / key).read_bytes())
        listed = LocalStore(root).list(f"{charges}date={body['date']}/")
        entries = tally_keys(TRAIN, charges, listed).get(body["date"], {})
        assert (body["count"], body["total_ng"]) == (
            len(entries),
            sum(e.emissions_ng for e in entries.values()),
        )
        assert body["count"] == (2 if date.fromisoformat(body["date"]) in days else 0)

    # The second run writes nothing: every closed day is read from its rollup.
    files = _files(root)
    again = _json(["budget", "rollup", "--store", str(root), *base])
    assert [(r["days_listed"], r["days_rolled"]) for r in again] == [
        (0, r["days_listed"] + r["days_rolled"]) for r in first
    ]
    assert _files(root) == files

    # budget status reads the rollups, with the same exact figures as without them.
    shown = _json(["budget", "status", "--store", str(root), *base])
    same = ("scope", "period", "used_kg", "reserved_kg", "remaining_kg", "percent", "charges")
    assert [{k: s[k] for k in same} for s in shown] == [{k: s[k] for k in same} for s in without]
    for status, scope, period in ((shown[0], TRAIN, "total"), (shown[1], TEAM, "month")):
        total_ng, entries = listed_usage(LocalStore(root), scope, period_window(period, now))
        assert status["used_kg"] == ng_to_kg(total_ng) and status["charges"] == len(entries)
    assert _files(root) == files  # status wrote no rollup either

    # A text run says the same, one line per scope.
    text = _cli(["budget", "rollup", "--store", str(root), *base])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{TRAIN} [total]: 0 closed days listed and rolled up, ")
    assert f"open from {first_open.isoformat()}" in lines[0]


def test_a_gate_decision_after_the_rollup_lists_only_the_open_days(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    root = tmp_path / "store"
    days = _charged(root, now)
    done = _cli(["budget", "rollup", "--store", str(root), "--scope", TRAIN, "--period", "total"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{TRAIN} [total]: {(closed_before(now) - days[0]).days} ")

    store = _ListingStore(root)
    ledger = BudgetLedger(store)
    budget = Budget(scope=TRAIN, period="total", limit_kg_co2e=1.0)
    held = BudgetGate(ledger, budget, timeout_s=60).reserve(
        "train", "fit", reservation_id=uuid.uuid4().hex
    )
    ledger.release(held)

    charges = f"budgets/{scope_key(TRAIN)}/charges/"
    covered = [p for p in store.listed if p.startswith(charges)]
    assert covered, "the open days are listed"
    closed = [f"{charges}date={d.isoformat()}/" for d in days]
    assert not [p for p in covered for day in closed if day.startswith(p)]
    assert f"budgets/{scope_key(TRAIN)}/rollups/" in store.listed  # the closed days: one listing
    usage = ledger.usage(TRAIN, "total")
    assert (usage.listed, list(usage.entries)) == (0, ["open-day"])
    assert usage.total_ng == listed_usage(store, TRAIN, period_window("total", now))[0]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--scope", "train"], "--scope"),
        (["--period", "month"], "--period"),
        (["--scope", TRAIN, "--period", "week"], "--period"),
    ],
)
def test_bad_input_exits_2_naming_the_option(tmp_path: Path, args: list[str], field: str) -> None:
    done = _cli(["budget", "rollup", "--store", str(tmp_path / "store"), *args])
    assert done.returncode == 2
    assert field in done.stderr and "Traceback" not in done.stderr


def test_no_budget_at_all_exits_2_saying_how_to_give_one(tmp_path: Path) -> None:
    done = _cli(["budget", "rollup", "--store", str(tmp_path / "store")])
    assert done.returncode == 2 and "no budgets configured" in done.stderr


@pytest.fixture
def down_s3(
    s3_store: Store, s3_endpoint: str, fault_proxy: Callable[..., FaultProxy]
) -> dict[str, str]:
    """moto's S3 behind a proxy that is down: the environment that reaches it."""
    proxy = fault_proxy(s3_endpoint, "s3")
    proxy.down()
    return {**os.environ, "AWS_ENDPOINT_URL_S3": proxy.url}


@pytest.mark.parametrize("scope", [[], ["--scope", TRAIN]], ids=["every-budget", "one-scope"])
def test_a_store_that_is_down_is_one_line_and_exit_1(
    down_s3: dict[str, str], scope: list[str]
) -> None:
    store = f"s3://{S3_BUCKET}/{STORE_PREFIX}"
    done = _cli(["budget", "rollup", "--store", store, *scope], down_s3)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("carbonpipe budget rollup: store unavailable: ")


def test_a_rollup_that_cannot_be_written_exits_1_and_says_so(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    root = tmp_path / "store"
    _charged(root, now)
    (root / f"budgets/{scope_key(TRAIN)}/rollups").write_text("a file where the folder goes")
    args = ["--scope", TRAIN, "--period", "total"]
    done = _cli(["budget", "rollup", "--store", str(root), *args])
    assert done.returncode == 1
    assert "rollups could not be written" in done.stdout and "Traceback" not in done.stderr


def test_a_read_as_of_a_later_clock_rolls_up_no_day_still_open(tmp_path: Path) -> None:
    """The ESG report reads a budget as of its period's end, mid-period: rollups of the days
    not closed yet would hide the charges written on time after them (they leave no marker)."""
    now = datetime.now(timezone.utc)
    root = tmp_path / "store"
    days = _charged(root, now)
    store = LocalStore(root)
    month_end = period_window("month", now).end
    assert month_end is not None
    as_of = month_end - timedelta(microseconds=1)
    ledger = BudgetLedger(store, clock=lambda: as_of)
    reported = ledger.usage(TRAIN, "total")
    first_open = closed_before(now).isoformat()
    rolled = [k.split("rollups/date=")[1][:10] for k in _rollups(root, TRAIN)]
    assert rolled and max(rolled) < first_open
    assert len(rolled) == (closed_before(now) - days[0]).days
    # A step charged on time today, after that read: a gate counts it.
    ended = (now - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    BudgetLedger(store).charge(_record("after-report", kg=2e-6, ended_at=ended))
    window = period_window("total", now)
    usage = BudgetLedger(store).usage(TRAIN, "total")
    assert usage.total_ng == listed_usage(store, TRAIN, window)[0] == reported.total_ng + 2_000_000
