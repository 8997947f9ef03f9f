"""The import direction of the core is a contract that the test command checks, and it bites.

``make lint`` runs ``lint-imports`` over the working tree; here the same contracts run over a
copy of the package with one wrong-way import planted, and must fail naming the chain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy shadows the installed package
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "carbonpipe", tmp_path / "carbonpipe", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    path.write_text(text.replace(anchor, anchor + line + "  # noqa: F401\n", 1))


def test_the_shipped_package_keeps_every_contract(tree: Path) -> None:
    out = _lint(tree)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        pytest.param(
            "carbonpipe.stores.spool",
            "from carbonpipe.budgets.charges import kg_to_ug",
            "carbonpipe.stores.spool -> carbonpipe.budgets.charges",
            id="store-imports-budgets",
        ),
        pytest.param(
            "carbonpipe.record",
            "import carbonpipe.tracker",
            "carbonpipe.record -> carbonpipe.tracker",
            id="record-imports-tracker",
        ),
        pytest.param(
            "carbonpipe.measure.meter",
            "import kfp",
            "carbonpipe.measure.meter -> kfp",
            id="core-imports-kfp",
        ),
    ],
)
def test_a_wrong_way_import_fails_naming_the_chain(
    tree: Path, module: str, line: str, broken: str
) -> None:
    _plant(tree, module, line)
    out = _lint(tree)
    assert out.returncode != 0
    assert "BROKEN" in out.stdout and broken in out.stdout, out.stdout
