"""The suite writes only under temporary folders: a snapshot of the repository's files before
the session, compared with the files after it, names any file a test left in the working tree.

Only *new* files count: edits are how developers work while tests run. New files in the
source folders (a developer's new module, test or golden file) are left out for the same
reason, unless they are in a folder named like an output (``carbon-artifacts``,
``local_outputs``...): what a default store or runner folder left there. Anywhere else (the
repository's root, ``./carbon-artifacts``, ``./local_outputs``, ``./emissions.csv``) every new
file counts. Tools' caches are not the suite's.
"""

from __future__ import annotations

import os
from pathlib import Path

# Folder names whose contents are tools' caches or the environment, not the suite's writes.
SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".venv",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        ".import_linter_cache",
        "build",
        "dist",
        ".whl",
        ".gl",
    }
)
SKIPPED_SUFFIXES = (".py", ".pyc", ".egg-info")
# Where developers add files; a test's default output folder is caught there too.
SOURCE_DIRS = frozenset(
    {"carbonpipe", "components", "operators", "pipelines", "tests", "docs", "bench", ".ci"}
)
OUTPUT_DIRS = frozenset(
    {"carbon-artifacts", "local_outputs", "carbon_reports", "kfp-outputs", ".demo", "spool"}
)


def snapshot(root: Path) -> frozenset[str]:
    """Every file under ``root`` (relative, ``/``-separated), less tools' caches."""
    found: set[str] = set()
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        rel = Path(here).relative_to(root)
        found.update((rel / name).as_posix() for name in files)
    return frozenset(found)


def created(before: frozenset[str], after: frozenset[str]) -> list[str]:
    """The files in ``after`` and not ``before`` that a test, not a developer, wrote."""

    def by_a_test(path: str) -> bool:
        parts = path.split("/")
        if path.endswith(SKIPPED_SUFFIXES):
            return False
        return parts[0] not in SOURCE_DIRS or any(p in OUTPUT_DIRS for p in parts[:-1])

    return sorted(p for p in after - before if by_a_test(p))
