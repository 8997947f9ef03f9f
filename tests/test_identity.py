"""Identity values no store key can hold are refused before any step runs, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbonpipe import CarbonTracker
from carbonpipe.report import read_records, record_keys
from carbonpipe.stores.local import LocalStore

WHERE = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}


@pytest.mark.parametrize(
    ("kwargs", "named", "problem"),
    [
        pytest.param(
            {"pipeline": "p" * 201}, "pipeline is 201 characters", "at most 200", id="pipeline"
        ),
        pytest.param({"project_name": "a\nb"}, "project_name", "control character", id="project"),
        pytest.param({"experiment_name": "x\x00"}, "experiment_name", "control", id="experiment"),
        pytest.param({"team": "t" * 500}, "team is 500 characters", "at most 200", id="team"),
        pytest.param({"run_id": "run\x7f1"}, "run_id", "control character", id="run-id"),
        pytest.param({"labels": {"k\tey": "v"}}, "labels key", "control character", id="label-key"),
        pytest.param({"labels": {"k" * 201: "v"}}, "labels key", "at most 200", id="label-long"),
    ],
)
def test_the_tracker_refuses_identity_values_no_key_can_hold(
    tmp_path: Path, kwargs: dict[str, object], named: str, problem: str
) -> None:
    with pytest.raises(ValueError) as info:
        CarbonTracker(output_dir=str(tmp_path / "store"), **WHERE, **kwargs)  # type: ignore[arg-type]
    assert named in str(info.value) and problem in str(info.value)


def test_a_value_from_the_environment_is_named_by_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_TEAM", "ml\r")
    with pytest.raises(ValueError, match="CARBONPIPE_TEAM .* control character"):
        CarbonTracker(output_dir=str(tmp_path / "store"), **WHERE)  # type: ignore[arg-type]


def test_start_tracking_refuses_a_bad_step_name_before_anything_starts(tmp_path: Path) -> None:
    tracker = CarbonTracker(output_dir=str(tmp_path / "store"), **WHERE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step is 201 characters"):
        tracker.start_tracking("s" * 201)
    with pytest.raises(ValueError, match="labels key .* control character"):
        tracker.start_tracking("fit", labels={"a\nb": "c"})
    assert tracker._open == {}  # nothing was started, so nothing is left half-open
    store = LocalStore(tmp_path / "store")
    assert list(read_records(store, record_keys(store))) == []


def test_values_at_the_limit_and_any_printable_text_are_accepted(tmp_path: Path) -> None:
    tracker = CarbonTracker(
        output_dir=str(tmp_path / "store"),
        pipeline="p" * 200,
        team="équipe/ranking v2 🌱",
        labels={"modèle": "bert\nlarge"},  # label values are free text; only keys name things
        **WHERE,  # type: ignore[arg-type]
    )
    assert tracker.settings.pipeline == "p" * 200
