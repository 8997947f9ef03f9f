"""``carbonpipe run --units N --unit NAME`` and ``$CARBONPIPE_UNITS_FILE``: a real subprocess."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys

CLI = [sys.executable, "-m", "carbonpipe", "run", "--provider", "gcp", "--region", "europe-west1"]


def _grams(rec: Record) -> float:
    """O + M in grams: M is 0 where the record has no embodied figure."""
    return (rec.emissions_kg_co2e + (getattr(rec, "embodied_kg_co2e", None) or 0.0)) * 1000


def _run(store: Path, *args: str, code: str = "pass") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--store", str(store), *args, "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _record(store: Path) -> Record:
    s = open_store(str(store))
    [rec] = list(read_records(s, record_keys(s)))
    return rec


def test_units_options_give_the_record_its_sci(tmp_path: Path) -> None:
    out = _run(tmp_path, "--step", "serve", "--units", "1000", "--unit", "inference")
    assert out.returncode == 0, out.stderr
    rec = _record(tmp_path)
    assert rec.functional_units == {"name": "inference", "count": 1000.0}
    assert rec.sci_g_per_unit is not None
    assert math.isclose(rec.sci_g_per_unit, _grams(rec) / 1000)


def test_the_command_writes_its_units_to_the_units_file(tmp_path: Path) -> None:
    code = "import os; open(os.environ['CARBONPIPE_UNITS_FILE'], 'w').write('250 batch job\\n')"
    out = _run(tmp_path, "--step", "score", code=code)
    assert out.returncode == 0, out.stderr
    rec = _record(tmp_path)
    assert rec.functional_units == {"name": "batch job", "count": 250.0}
    assert math.isclose(rec.sci_g_per_unit or 0, _grams(rec) / 250)


def test_a_count_alone_in_the_file_takes_the_unit_option(tmp_path: Path) -> None:
    code = (
        "import os, json; f = os.environ['CARBONPIPE_UNITS_FILE']; "
        "open(f, 'w').write(json.dumps({'count': 42}))"
    )
    out = _run(tmp_path, "--unit", "token", code=code)
    assert out.returncode == 0, out.stderr
    assert _record(tmp_path).functional_units == {"name": "token", "count": 42.0}


def test_an_invalid_units_file_is_a_note_and_the_options_stand(tmp_path: Path) -> None:
    code = "import os; open(os.environ['CARBONPIPE_UNITS_FILE'], 'w').write('many things')"
    out = _run(tmp_path, "--units", "3", "--unit", "batch job", code=code)
    assert out.returncode == 0, out.stderr
    rec = _record(tmp_path)
    assert rec.functional_units == {"name": "batch job", "count": 3.0}
    assert any("units file ignored" in e for e in rec.tracking_errors)


def test_without_units_the_file_is_removed_and_sci_is_null(tmp_path: Path) -> None:
    code = "import os; print(os.environ['CARBONPIPE_UNITS_FILE'])"
    out = _run(tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    assert not Path(out.stdout.strip()).exists()
    rec = _record(tmp_path)
    assert rec.functional_units is None and rec.sci_g_per_unit is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--units", "0", "--unit", "inference"], "--units must be a finite number > 0"),
        (["--units", "nan", "--unit", "inference"], "--units must be a finite number > 0"),
        (["--units", "5"], "--units needs --unit"),
        (["--unit", "x" * 65], "--unit must be at most 64"),
    ],
)
def test_bad_units_options_stop_the_run_before_the_command(
    tmp_path: Path, args: list[str], message: str
) -> None:
    marker = tmp_path / "ran"
    out = _run(tmp_path / "s", *args, code=f"open({str(marker)!r}, 'w')")
    assert out.returncode == 2
    assert message in out.stderr
    assert not marker.exists()
