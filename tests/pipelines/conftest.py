"""Fixtures of the KFP tests: a shared hardware-profile cache and kfp.local helpers.

Every tracked step is a fresh process, and CodeCarbon's hardware detection costs ~2 s in a
process whose cache folder is empty; the root conftest gives each test a new one. These tests
share one (a session temp folder, never the user's) so only the first step pays.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the whole session."""
    return tmp_path_factory.mktemp("carbonpipe-shared-cache")


@pytest.fixture(autouse=True)
def _shared_hardware_cache(
    shared_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(shared_cache_dir))
    yield


def run_dir(pipeline_root: Path) -> Path:
    """The folder kfp.local wrote the (single) run into."""
    [run] = [p for p in pipeline_root.iterdir() if p.is_dir()]
    return run


def task_output(pipeline_root: Path, task: str) -> dict:
    """The executor output (parameters, artifacts with their metadata) of one task of the run."""
    import json

    return json.loads((run_dir(pipeline_root) / task / "executor_output.json").read_text())


def artifact_metadata(pipeline_root: Path, task: str, output: str) -> dict:
    """The metadata of one output artifact of one task (what the KFP UI shows for Metrics)."""
    [artifact] = task_output(pipeline_root, task)["artifacts"][output]["artifacts"]
    return artifact["metadata"]
