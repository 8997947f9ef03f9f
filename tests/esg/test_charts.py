"""Trend plots per pipeline, the report's charts and the number formatting the page uses."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from carbonpipe.cli.app import main
from carbonpipe.esg import aggregation as esg
from carbonpipe.esg import charts as esg_charts
from carbonpipe.esg import config as esg_config
from carbonpipe.esg import report as esg_report
from carbonpipe.stores.base import Store
from tests.esg.test_esg import fill, make_record


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_pipeline_trend_is_a_deterministic_png(local_store: Store) -> None:
    fill(local_store)
    agg = esg.aggregate(local_store, "2026-11", pipeline="train")
    first = esg_charts.pipeline_trend(agg, "train")
    assert png_size(first) == (1040, 380)
    assert esg_charts.pipeline_trend(agg, "train") == first  # no timestamp, no version in the file
    assert b"matplotlib" not in first


def test_cli_plot_draws_the_last_n_days(
    local_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(local_store)
    extra = make_record("train", "prep", "ranking", "2026-11-28", "e", cpu=0.25)
    local_store.put_if_absent(extra.key, extra.to_json())
    out = tmp_path / "trend.png"
    code = main(
        [
            "plot",
            "--store",
            local_store.uri,
            "--pipeline",
            "train",
            "--days",
            "30",
            "--end",
            "2026-11-30",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert png_size(out.read_bytes()) == (1040, 380)
    text = capsys.readouterr().out
    assert "train, 3 attempts, 5.26 kg CO2e over 30 days" in text  # r3 + r4 + the extra


def test_cli_plot_refuses_zero_days(local_store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "--store", local_store.uri, "--pipeline", "train", "--days", "0"]) == 2
    assert "--days must be >= 1" in capsys.readouterr().err


def test_report_charts_draw_from_the_report(local_store: Store) -> None:
    fill(local_store)
    report = esg_report.build_report(
        esg.aggregate(local_store, "2026-Q4"), esg_config.load_esg_config({})
    )
    charts = esg_charts.report_charts(report)
    assert list(charts) == list(esg_charts.CHART_NAMES)
    assert all(png_size(png)[0] == 1040 for png in charts.values())


@pytest.mark.parametrize(
    ("kg", "text"),
    [
        pytest.param(0.0, "0 g CO2e", id="zero"),
        pytest.param(0.00042, "420 mg CO2e", id="milligrams"),
        pytest.param(1.8e-8, "18 µg CO2e", id="micrograms"),
        pytest.param(0.0123, "12.3 g CO2e", id="grams"),
        pytest.param(10.15, "10.2 kg CO2e", id="kilograms"),
        pytest.param(12345.0, "12.3 t CO2e", id="tonnes"),
        pytest.param(None, "-", id="none"),
    ],
)
def test_masses_are_shown_in_the_unit_that_suits_them(kg: float | None, text: str) -> None:
    assert esg_charts.mass(kg) == text


def test_sig_keeps_three_significant_figures() -> None:
    assert [esg_charts.sig(v) for v in (1234567.0, 344.7099, 0.035714, 100.0)] == [
        "1,234,567",
        "345",
        "0.0357",
        "100",
    ]


@pytest.mark.parametrize(
    ("max_kg", "unit", "values"),
    [
        pytest.param(1.8e-8, "µg", 18.0, id="micrograms"),
        pytest.param(4.2e-4, "mg", 420.0, id="milligrams"),
        pytest.param(0.25, "g", 250.0, id="grams"),
        pytest.param(10.15, "kg", 10.15, id="kilograms"),
        pytest.param(12345.0, "t", 12.345, id="tonnes"),
        pytest.param(0.0, "g", 0.0, id="nothing"),
    ],
)
def test_chart_axes_pick_a_unit_with_three_significant_digits(
    max_kg: float, unit: str, values: float
) -> None:
    # An axis of 18 µg, not of 0.0000180 g.
    got, factor = esg_charts.mass_unit(max_kg)
    assert got == unit and max_kg * factor == pytest.approx(values)
