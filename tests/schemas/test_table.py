"""The README's field table is the one generated from the record schema, and the generator
is the command the README names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from carbonpipe.schemas.table import SCHEMA_FILES, field_rows, load_schema, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_holds_the_table_generated_from_the_record_schema() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- schema-table:record -->\n(.*?)\n<!-- /schema-table:record -->", text, re.S
    )
    assert found, "README.md lacks the schema-table:record markers"
    assert found.group(1) == markdown_table("record")


def test_the_table_command_prints_each_schema_with_one_row_per_field() -> None:
    for name in SCHEMA_FILES:
        done = subprocess.run(
            [sys.executable, "-m", "carbonpipe.schemas.table", name],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        lines = done.stdout.rstrip("\n").split("\n")
        rows = field_rows(load_schema(name))
        assert len(lines) == 2 + len(rows)
        assert [line.split(" | ")[0] for line in lines[2:]] == [f"| `{r[0]}`" for r in rows]
    bad = subprocess.run(
        [sys.executable, "-m", "carbonpipe.schemas.table", "nope"], capture_output=True, timeout=60
    )
    assert bad.returncode == 2


def test_every_field_of_the_record_has_its_row() -> None:
    paths = [path for path, _, _ in field_rows(load_schema("record"))]
    assert len(paths) == len(set(paths))
    for expected in (
        "energy_kwh.remote",
        "measurement.gpu_model",
        "measurement.cpu_count",
        "remote[].energy_kwh",
        "alerts[].factor",
    ):
        assert expected in paths
