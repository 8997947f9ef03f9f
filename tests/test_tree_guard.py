"""The working-tree guard (tests/tree_guard.py) sees the files a test leaves behind."""

from __future__ import annotations

from pathlib import Path

from tests.tree_guard import created, snapshot


def test_a_new_store_file_is_seen_and_caches_and_sources_are_not(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x")
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    before = snapshot(tmp_path)
    assert before == frozenset({"README.md"})

    record = tmp_path / "carbon-artifacts" / "records" / "v2" / "r.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    (tmp_path / ".venv" / "lib" / "x.txt").write_text("")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_text("")
    (tmp_path / "pkg" / "new_module.py").write_text("")  # a developer's new file
    (tmp_path / ".pytest_cache").mkdir()
    (tmp_path / ".pytest_cache" / "v").write_text("")
    (tmp_path / "README.md").write_text("edited")  # edits are not the suite's
    (tmp_path / "tests" / "esg" / "golden").mkdir(parents=True)
    (tmp_path / "tests" / "esg" / "golden" / "q.sql").write_text("")  # a developer's new file
    (tmp_path / "tests" / "local_outputs").mkdir()
    (tmp_path / "tests" / "local_outputs" / "run.json").write_text("")  # kfp.local's default
    (tmp_path / "emissions.csv").write_text("")

    assert created(before, snapshot(tmp_path)) == [
        "carbon-artifacts/records/v2/r.json",
        "emissions.csv",
        "tests/local_outputs/run.json",
    ]
