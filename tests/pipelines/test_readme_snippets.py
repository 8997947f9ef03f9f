"""The README's KFP example, run as a user runs it: copied verbatim into a file, then
``python pipeline.py`` in an empty folder (KFP's local runner, no cluster)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(name: str) -> str:
    """The fenced Python block right after the ``<!-- readme-test: NAME ... -->`` marker."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- readme-test: {re.escape(name)}\b[^>]*-->\n```python\n(.*?)\n```\n", text, re.S
    )
    assert match, f"README has no block marked readme-test: {name}"
    return match.group(1) + "\n"


def run_snippet(tmp_path: Path, name: str, shared_cache_dir: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "pipeline.py"
    script.write_text(readme_block(name), encoding="utf-8")
    env = {**os.environ, "CARBONPIPE_CACHE_DIR": str(shared_cache_dir)}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readme_kfp_example_runs_the_gated_step_and_every_sweep_iteration(
    tmp_path: Path, shared_cache_dir: Path
) -> None:
    done = run_snippet(tmp_path, "kfp-gate", shared_cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Could not resolve" not in done.stderr

    store = open_store(str(tmp_path / "carbon-artifacts"))
    recs = [
        Record.from_json(store.get(k).data) for k in store.list("records/") if k.endswith(".json")
    ]
    assert sorted(r.step for r in recs) == [
        "train",  # the gated step
        "train-2[0.001]",  # KFP names the second train task train-2; the item names iterations
        "train-2[0.01]",
        "train-2[0.1]",
    ]
    assert {r.status for r in recs} == {"succeeded"}
    assert {r.pipeline for r in recs} == {"train"}
    assert len({r.run_id for r in recs}) == 1


def test_the_marker_finds_the_block(tmp_path: Path) -> None:
    code = readme_block("kfp-gate")
    assert 'dsl.If(gate.outputs["decision"] == "run")' in code
    assert "dsl.Else" not in code.split("dsl.If", 1)[1].split("\n")[1]
    with pytest.raises(AssertionError, match="no block"):
        readme_block("no-such-block")
