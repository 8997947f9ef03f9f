"""KFP: carbon_component(functional_unit=..., units_from_result=...) and current_step().add_units
inside the step function give the record its SCI, under kfp.local's SubprocessRunner."""

import json
import math
from pathlib import Path

import pytest

from carbonpipe.errors import ConfigError
from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.timeout(300),
]

LOCATION = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}


def _records(store: str) -> dict[str, Record]:
    s = open_store(store)
    recs = [Record.from_json(s.get(k).data) for k in s.list("records/") if k.endswith(".json")]
    return {r.step: r for r in recs}


def _grams(rec: Record) -> float:
    """O + M in grams: M is 0 where the record has no embodied figure."""
    return (rec.emissions_kg_co2e + (getattr(rec, "embodied_kg_co2e", None) or 0.0)) * 1000


def test_kfp_steps_declare_their_units(tmp_path: Path) -> None:
    from kfp import dsl

    from carbonpipe.components import carbon_component, run_local

    @carbon_component(functional_unit="training run", **LOCATION)
    def train() -> None:
        sum(i * i for i in range(10_000))

    @carbon_component(**LOCATION)
    def serve(n: int) -> None:
        from carbonpipe import current_step

        current_step().add_units(n, "inference")

    @carbon_component(functional_unit="batch job", units_from_result=True, **LOCATION)
    def score() -> int:
        return 12

    @dsl.pipeline(name="sci")
    def sci(store: str) -> None:
        train(carbon_store=store).set_display_name("train")
        serve(n=1000, carbon_store=store)
        score(carbon_store=store)

    store = str(tmp_path / "store")
    run_local(sci, pipeline_root=tmp_path / "out", store=store)
    recs = _records(store)
    expect = {
        "train": {"name": "training run", "count": 1.0},
        "serve": {"name": "inference", "count": 1000.0},
        "score": {"name": "batch job", "count": 12.0},
    }
    assert set(recs) == set(expect)
    for step, units in expect.items():
        rec = recs[step]
        assert rec.functional_units == units, step
        assert rec.sci_g_per_unit is not None
        assert math.isclose(rec.sci_g_per_unit, _grams(rec) / units["count"])
    # The KFP UI's Metrics show the score too.
    [done] = (tmp_path / "out").glob("*/serve/executor_output.json")
    [ui] = json.loads(done.read_text())["artifacts"]["carbon_metrics"]["artifacts"]
    assert ui["metadata"]["sci_g_per_unit"] == pytest.approx(recs["serve"].sci_g_per_unit)


def test_a_bad_functional_unit_is_refused_when_the_component_is_defined() -> None:
    from carbonpipe.components import carbon_component

    with pytest.raises(ConfigError, match="^functional_unit"):
        carbon_component(functional_unit="")
