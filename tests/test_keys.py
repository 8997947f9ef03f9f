"""Identity values become store keys one to one: no two values share a folder, every key is valid."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carbonpipe.budgets.charges import baseline_key, charge_record, safe_name
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.record import Record, make_record_id, partition_value, record_key
from carbonpipe.report import summarize
from carbonpipe.stores.base import check_key
from carbonpipe.stores.local import LocalStore
from tests.test_record import _record as record_dict

# Any text an identity may be (at most 200 characters), control characters and lone
# surrogates included: the encodings must hold even for values the tracker would refuse.
identity_text = st.text(st.characters(exclude_categories=()), max_size=200)
KEY_SAFE = re.compile(r"[A-Za-z0-9._\-]+")
NAME_MAX = 255  # bytes in one path component on Linux filesystems


def _lossy(value: str) -> str:
    """What the key layout used to make of a value: unsafe characters as ``_``."""
    return re.sub(r"[^A-Za-z0-9._\-]", "_", value) or "_"


def _valid_part(part: str) -> bool:
    check_key(f"root/{part}/x.json")  # raises ValueError when not a valid key part
    return len(part.encode()) <= NAME_MAX


@settings(max_examples=300, database=None)
@given(identity_text)
@example("")
@example("a\n")
@example("team/a")
@example("\ud800")
@example("é" * 200)
def test_partition_value_is_a_valid_folder_and_differs_from_the_lossy_form(value: str) -> None:
    part = partition_value(value)
    assert _valid_part(f"pipeline={part}")
    assert check_key(record_key("2026-11-24", value, "r" * 32))
    if KEY_SAFE.fullmatch(value):
        assert part == value  # existing stores keep their keys
    else:
        assert part != _lossy(value) and part != partition_value(_lossy(value))


@settings(max_examples=300, database=None)
@given(identity_text.filter(bool))
@example(".0")
@example("..")
@example("a\n")
@example("\ud800")
@example("/" * 200)
def test_safe_name_is_a_valid_key_part_and_differs_from_the_lossy_form(value: str) -> None:
    name = safe_name(value)
    assert _valid_part(name) and _valid_part(f"step={name}") and _valid_part(f"{name}.json")
    assert check_key(baseline_key(value, value))
    if KEY_SAFE.fullmatch(value) and not value.startswith("."):
        assert name == value  # existing ledgers and baselines keep their keys
    elif _lossy(value) != value:  # ".0" is its own lossy form, and unsafe only for its dot
        assert name != _lossy(value) and name != safe_name(_lossy(value))


@settings(max_examples=200, database=None)
@given(st.lists(identity_text, min_size=2, max_size=8, unique=True))
def test_the_encodings_are_one_to_one(values: list[str]) -> None:
    assert len({partition_value(v) for v in values}) == len(values)
    named = [v for v in values if v]
    assert len({safe_name(v) for v in named}) == len(named)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("team/a", "team_a", id="slash"),
        pytest.param("ranking v2", "ranking_v2", id="space"),
        pytest.param("", "_", id="empty"),
        pytest.param("a\n", "a", id="trailing-newline"),
        pytest.param("été", "_t_", id="accents"),
    ],
)
def test_values_that_differ_only_in_unsafe_characters_get_different_keys(a: str, b: str) -> None:
    assert partition_value(a) != partition_value(b)
    if a:
        assert safe_name(a) != safe_name(b)
    assert partition_value("ranking v2").startswith("ranking_v2-")


# -- the readers still find every record ------------------------------------------------------


def _put(store: LocalStore, pipeline: str, run: str, *, key: str | None = None) -> Record:
    rid = make_record_id("p", pipeline, run, "train", 1)
    rec = Record.from_dict(record_dict(pipeline=pipeline, run_id=run, record_id=rid, team=pipeline))
    store.put_if_absent(key or rec.key, rec.to_json())
    return rec


def test_report_keeps_apart_pipelines_whose_names_differ_only_in_unsafe_characters(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    slash, underscore = _put(store, "team/a", "r1"), _put(store, "team_a", "r2")
    assert slash.key != underscore.key
    assert summarize(store, pipeline="team/a").by_pipeline.keys() == {"team/a"}
    assert summarize(store, pipeline="team_a").by_pipeline.keys() == {"team_a"}
    assert summarize(store).records == 2


def test_records_earlier_versions_wrote_under_the_lossy_folder_are_still_found(
    tmp_path: Path,
) -> None:
    from carbonpipe import esg

    store = LocalStore(tmp_path / "store")
    legacy_key = f"records/v1/date=2026-11-24/pipeline=ranking_v2/{'0' * 32}.json"
    _put(store, "ranking v2", "old", key=legacy_key)  # where the old layout put it
    _put(store, "ranking v2", "new")
    _put(store, "ranking_v2", "other")  # shares the old folder, is another pipeline
    assert summarize(store, pipeline="ranking v2").records == 2
    assert summarize(store, pipeline="ranking_v2").records == 1
    assert esg.aggregate(store, "2026-11", pipeline="ranking v2").totals().records == 2
    assert esg.aggregate(store, "2026-11", pipeline="ranking_v2").totals().records == 1


def test_the_ledger_keeps_apart_teams_whose_names_differ_only_in_unsafe_characters(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    recs: dict[str, Any] = {}
    for team in ("ml/a", "ml_a"):
        rid = make_record_id("p", "train", team, "fit", 1)
        recs[team] = Record.from_dict(
            record_dict(pipeline="train", team=team, run_id=team, record_id=rid)
        )
        charge_record(store, recs[team])
    ledger = BudgetLedger(store)
    for team in ("ml/a", "ml_a"):
        [entry] = ledger.charges(f"team:{team}")
        assert entry.record_id == recs[team].record_id
