"""The instance type, the lifetime, the PUE and a budget's basis as settings; a total book."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.budgets.budget import Budget, load_budgets
from carbonpipe.budgets.charges import book_scope, charge_record
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.config import resolve_settings
from carbonpipe.errors import ConfigError
from carbonpipe.record import Record


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "CARBONPIPE_INSTANCE_TYPE",
        "CARBONPIPE_EMBODIED_LIFETIME_YEARS",
        "CARBONPIPE_PUE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CARBONPIPE_CONFIG", str(tmp_path / "absent.yaml"))


def test_instance_type_argument_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "carbon.yaml"
    config.write_text("instance_type: n2-standard-8\nembodied_lifetime_years: 5\n")

    from_file = resolve_settings(config_file=config)
    assert (from_file.instance_type, from_file.sources["instance_type"]) == (
        "n2-standard-8",
        "file",
    )
    assert from_file.embodied_lifetime_years == 5.0
    location = from_file.locate(provider="gcp", region="europe-west1")
    assert (location.instance_type, location.instance_type_by) == ("n2-standard-8", "config")

    monkeypatch.setenv("CARBONPIPE_INSTANCE_TYPE", "c2-standard-4")
    from_env = resolve_settings(config_file=config)
    assert from_env.locate(provider="gcp", region="europe-west1").instance_type_by == "env"

    given = resolve_settings(config_file=config, instance_type="a3-highgpu-8g")
    assert given.locate(provider="gcp", region="europe-west1").instance_type == "a3-highgpu-8g"


def test_bad_values_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="instance_type"):
        resolve_settings(instance_type="m5.large; rm -rf /")
    monkeypatch.setenv("CARBONPIPE_EMBODIED_LIFETIME_YEARS", "0")
    with pytest.raises(ConfigError, match="CARBONPIPE_EMBODIED_LIFETIME_YEARS"):
        resolve_settings()


def test_the_configured_pue_wins_the_default_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_settings().pue_for("aws", "eu-west-1")[1]["kind"] == "region"
    assert resolve_settings(pue=1.0).pue_for("aws", "eu-west-1") == (
        1.0,
        {"kind": "user", "name": "configured pue", "vintage": None},
    )
    monkeypatch.setenv("CARBONPIPE_PUE", "1.25")
    assert resolve_settings().pue_for("aws", "eu-west-1")[0] == 1.25


def test_budget_basis(tmp_path: Path) -> None:
    assert Budget(scope="pipeline:a", period="month", limit_kg_co2e=1).basis == "operational"
    with pytest.raises(ValueError, match="basis"):
        Budget(scope="pipeline:a", period="month", limit_kg_co2e=1, basis="embodied")
    both = load_budgets(
        {
            "budgets": [
                {"scope": "pipeline:a", "period": "month", "limit_kg_co2e": 1},
                {"scope": "pipeline:a", "period": "month", "limit_kg_co2e": 2, "basis": "total"},
            ]
        }
    )
    assert [b.basis for b in both] == ["operational", "total"]
    assert both[1].on_book().scope == "pipeline:a (total)" == book_scope("pipeline:a", "total")
    assert both[0].on_book() is both[0]
    book = both[1].on_book()
    assert book.on_book() is book  # a definition read back from the store is the book already


def _record(embodied: float | None) -> Record:
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return Record(
        record_id="r1",
        project="p",
        experiment="",
        pipeline="train",
        run_id="run",
        step="fit",
        team="",
        attempt=1,
        started_at=now,
        ended_at=now,
        duration_s=1.0,
        status="succeeded",
        energy_kwh={"cpu": 0.0, "gpu": 0.0, "ram": 0.0, "remote": 0.0, "total": 0.0},
        power_w={"cpu": 0.0, "gpu": 0.0, "ram": 0.0},
        pue=1.0,
        intensity_g_per_kwh=100.0,
        emissions_kg_co2e=0.002,
        location={
            "provider": None,
            "region": None,
            "country_iso": "BEL",
            "detected_by": "argument",
        },
        intensity_source={"name": "test", "vintage": "2026", "kind": "country"},
        measurement={"method": "estimate"},
        embodied_kg_co2e=embodied,
        total_kg_co2e=None if embodied is None else 0.002 + embodied,
    )


def test_a_total_book_is_charged_operational_plus_embodied(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    charge = charge_record(store, _record(0.005), total_scopes={"pipeline:train"})
    assert charge.emissions_kg_co2e == 0.002  # what the record emitted, as before
    ledger = BudgetLedger(store)
    assert ledger.usage("pipeline:train").total_ng == 2_000_000_000
    assert ledger.usage("pipeline:train (total)").total_ng == 7_000_000_000

    # Without a total budget nothing else is written; a record without embodied counts as is.
    other = open_store(str(tmp_path / "other"))
    charge_record(other, _record(None), total_scopes={"pipeline:train"})
    assert BudgetLedger(other).usage("pipeline:train (total)").total_ng == 2_000_000_000
    charge_record(other, _record(0.005))
    assert BudgetLedger(other).usage("pipeline:train").total_ng == 2_000_000_000
