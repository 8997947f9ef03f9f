"""Every JSON document the project writes is strict JSON: no NaN, no Infinity.

An AST scan keeps every ``json.dump``/``json.dumps`` call in the shipped code on
``allow_nan=False``; a record whose figures are not finite is written with them replaced and
noted (so its budget charge is made), and one that still holds such a figure is refused by
name rather than written.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.delivery import deliver_record
from carbonpipe.errors import InvalidRecord
from carbonpipe.intensity.table import lookup_intensity
from carbonpipe.measure.base import Measurement
from carbonpipe.pricing import MAX_FIGURE, build_record
from carbonpipe.record import Record, make_record_id
from carbonpipe.stores.opener import open_store

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("carbonpipe", "components", "operators", "pipelines")


def _json_writes_without_allow_nan(
    root: Path = ROOT, folders: tuple[str, ...] = SHIPPED
) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("dump", "dumps")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "json"
                ):
                    continue
                strict = any(
                    k.arg == "allow_nan"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is False
                    for k in node.keywords
                )
                if not strict:
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_json_write_in_the_shipped_code_refuses_nan() -> None:
    assert _json_writes_without_allow_nan() == []


def test_the_scan_finds_a_json_write_that_allows_nan(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(
        "import json\n"
        "json.dumps({'a': 1})\n"
        "json.dump({}, f, allow_nan=False)\n"
        "json.dumps({}, allow_nan=True)\n"
        "json.loads('{}')\n"
    )
    assert _json_writes_without_allow_nan(tmp_path, ("pkg",)) == ["pkg/mod.py:2", "pkg/mod.py:4"]


def _measurement(**figures: float) -> Measurement:
    ended = datetime.now(timezone.utc)
    base: dict[str, Any] = {
        "started_at": ended - timedelta(seconds=2),
        "ended_at": ended,
        "duration_s": 2.0,
        "cpu_energy_kwh": 1e-6,
        "gpu_energy_kwh": 0.0,
        "ram_energy_kwh": 1e-7,
        "cpu_power_w": 1.8,
        "gpu_power_w": 0.0,
        "ram_power_w": 0.2,
        "method": "tdp",
        "tracking_mode": "machine",
        "share": "machine",
        "codecarbon_version": None,
        "cpu_model": None,
        "gpu_model": None,
    }
    base.update(figures)
    return Measurement(**base)


def _record(m: Measurement, remote: list[dict[str, Any]] | None = None) -> Record:
    identity = {
        "record_id": make_record_id("p", "p", "run-1", "train", 1),
        "project": "p",
        "experiment": "",
        "pipeline": "p",
        "run_id": "run-1",
        "step": "train",
        "team": "",
        "attempt": 1,
        "labels": {},
    }
    return build_record(
        identity,
        "succeeded",
        m,
        location={"provider": None, "region": None, "country_iso": None, "detected_by": "world"},
        intensity=lookup_intensity(None, None, None),
        pue=1.0,
        tracking_mode="machine",
        remote=remote or [],
    )


def test_non_finite_figures_are_replaced_noted_written_and_charged(tmp_path: Path) -> None:
    m = _measurement(cpu_energy_kwh=math.nan, gpu_power_w=math.inf)
    remote = [
        {"server": "http://m:1", "count": 1, "energy_kwh": math.inf, "emissions_kg_co2e": 1.0}
    ]
    record = _record(m, remote)
    assert record.energy_kwh["cpu"] == 0.0
    assert record.power_w["gpu"] == MAX_FIGURE
    assert record.energy_kwh["remote"] == MAX_FIGURE
    assert math.isfinite(record.emissions_kg_co2e)
    noted = " | ".join(record.tracking_errors)
    for field in ("energy_kwh.cpu", "power_w.gpu", "remote[0].energy_kwh", "energy_kwh.total"):
        assert field in noted
    Record.from_json(record.to_json())  # valid against the schema, too
    store = open_store(str(tmp_path / "store"))
    done = deliver_record(store, record, spool_dir=tmp_path / "spool")
    assert done.charge_error is None
    (written,) = (tmp_path / "store").glob(f"records/v2/**/{record.record_id}.json")
    json.loads(written.read_bytes(), parse_constant=pytest.fail)
    charges = list((tmp_path / "store").glob(f"budgets/**/charges/**/{record.record_id}__*"))
    assert len(charges) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"duration_s": math.nan}, "duration_s", id="nan"),
        pytest.param({"emissions_kg_co2e": math.inf}, "emissions_kg_co2e", id="inf"),
    ],
)
def test_a_record_still_holding_a_non_finite_figure_is_refused_by_name(
    change: dict[str, float], field: str
) -> None:
    record = replace(_record(_measurement()), **change)
    with pytest.raises(InvalidRecord, match=field):
        record.to_json()
    nested = replace(_record(_measurement()), power_w={"cpu": 1.0, "gpu": -math.inf, "ram": 0.0})
    with pytest.raises(InvalidRecord, match=r"power_w\.gpu"):
        nested.to_json()
