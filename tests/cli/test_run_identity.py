"""``carbonpipe run`` refuses identity values no store key can hold, before the command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]


@pytest.mark.parametrize(
    ("options", "env", "named"),
    [
        pytest.param(["--pipeline", "p" * 201], {}, "--pipeline is 201 characters", id="pipeline"),
        pytest.param(["--step", "s" * 201], {}, "--step is 201 characters", id="step"),
        pytest.param(["--run-id", "r\x1b[2J"], {}, "--run-id", id="run-id-escape"),
        pytest.param(["--label", "a\tb=1"], {}, "--label key", id="label-key"),
        pytest.param([], {"CARBONPIPE_TEAM": "ml\nops"}, "CARBONPIPE_TEAM", id="env-team"),
        pytest.param(
            ["--budget-scope", "pipeline:p", "--budget-kg", "1", "--pipeline", "p" * 201],
            {},
            "--pipeline is 201 characters",
            id="gated",
        ),
    ],
)
def test_run_refuses_a_name_no_key_can_hold_before_the_command_starts(
    tmp_path: Path, options: list[str], env: dict[str, str], named: str
) -> None:
    marker = tmp_path / "ran"
    store = tmp_path / "store"
    out = subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(store),
            *WHERE,
            *options,
            "--",
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w')",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert out.returncode == 2, out.stderr
    assert named in out.stderr and ("at most 200" in out.stderr or "control" in out.stderr)
    assert not marker.exists()  # the command never ran
    assert not store.exists()  # and nothing was written for it
