"""The ledger in nanograms: new charges and reservations, and those written in micrograms before."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.charges import scope_key
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.stores.base import Store
from carbonpipe.stores.memory import MemoryStore
from carbonpipe.units import kg_to_ng, ng_to_kg
from tests.budgets.test_ledger import _record

NOV_25 = datetime(2026, 11, 25, tzinfo=timezone.utc)
BUDGET = Budget(scope="pipeline:train", period="month", limit_kg_co2e=1.0)
CHARGES = f"budgets/{scope_key('pipeline:train')}/charges/date=2026-11-24/step=fit/"


def test_a_charge_carries_its_exact_nanograms_in_key_and_body(local_store: Store) -> None:
    kg = 17.05e-9 / 5  # a demo step: 3.41 µg, which whole micrograms would have made 3
    charge = BudgetLedger(local_store, clock=lambda: NOV_25).charge(_record("r1", kg=kg))
    key = next(k for k in charge.keys if k.startswith("budgets/pipeline=train/"))
    assert key == f"{CHARGES}r1__{kg_to_ng(kg)}ng.json"
    body = json.loads(local_store.get(key).data)
    assert body["schema"] == "carbonpipe.charge/2" and body["emissions_ng"] == kg_to_ng(kg) == 3410
    [entry] = BudgetLedger(local_store, clock=lambda: NOV_25).charges("pipeline:train")
    assert (entry.emissions_ng, entry.emissions_ug) == (3410, 3)


def test_charges_written_in_micrograms_still_count(local_store: Store) -> None:
    ledger = BudgetLedger(local_store, clock=lambda: NOV_25)
    # An earlier version's charge: the amount in whole micrograms, no unit in the key.
    local_store.put_if_absent(f"{CHARGES}old__1234.json", b"{}")
    ledger.charge(_record("new", kg=5.5e-9))  # 5,500 ng
    entries = {e.record_id: e.emissions_ng for e in ledger.charges("pipeline:train")}
    assert entries == {"old": 1_234_000, "new": 5_500}
    assert ledger.status(BUDGET).used_kg == ng_to_kg(1_239_500)


def test_reservations_are_kept_in_nanograms_and_old_entries_in_micrograms_still_hold(
    local_store: Store,
) -> None:
    ledger = BudgetLedger(local_store, budgets=[BUDGET], clock=lambda: NOV_25)
    res = ledger.reserve(BUDGET, 2.5e-9, reservation_id="new-step")
    doc = json.loads(local_store.get(res.document_key).data)
    [entry] = doc["reservations"]
    # The estimate in nanograms, and in micrograms for readers of earlier versions.
    assert (entry["estimate_ng"], entry["estimate_ug"]) == (2_500, 2)
    # An entry an earlier version wrote: micrograms only.
    doc["reservations"].append(
        {**entry, "reservation_id": "old-step", "estimate_ug": 7, "estimate_ng": None}
    )
    del doc["reservations"][1]["estimate_ng"]
    local_store.replace(
        res.document_key,
        json.dumps(doc).encode(),
        if_version=local_store.get(res.document_key).version,
    )
    status = ledger.status(BUDGET)
    assert status.reserved_kg == ng_to_kg(2_500 + 7_000) and status.reservations == 2


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=1, max_size=40))
def test_used_is_the_exact_sum_of_the_charged_records(amounts: list[float]) -> None:
    store = MemoryStore()
    ledger = BudgetLedger(store, clock=lambda: NOV_25)
    for i, kg in enumerate(amounts):
        ledger.charge(_record(f"r{i}", kg=kg))
    expected = sum(kg_to_ng(kg) for kg in amounts)
    assert sum(e.emissions_ng for e in ledger.charges("pipeline:train", "month")) == expected
    budget = Budget(scope="pipeline:train", period="month", limit_kg_co2e=1e4)
    assert ledger.status(budget).used_kg == ng_to_kg(expected)
