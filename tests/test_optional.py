"""A missing optional dependency is one line naming the extra to install, never a traceback.

The packages are hidden the way a venv without the extra lacks them: ``sys.modules[name] =
None`` makes ``import name`` raise ``ModuleNotFoundError``. Whole-process behaviour (what a
user sees) runs in a subprocess; the image's own check, a venv without pyarrow running the
nightly ESG job, is in tests/test_image.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from carbonpipe._optional import missing_message, needs_extra, require
from carbonpipe.cli.app import main
from carbonpipe.errors import CarbonpipeError, MissingDependency
from carbonpipe.stores.opener import open_store

ESG_LINE = "ESG reports need the esg extra: pip install 'carbonpipe[esg]'"


def hide(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    """Make ``import PACKAGE`` (and its submodules) fail as if it were not installed."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(f"{p}.") for p in packages):
            monkeypatch.setitem(sys.modules, name, None)
    for p in packages:
        monkeypatch.setitem(sys.modules, p, None)
        parent, _, child = p.rpartition(".")
        if parent and sys.modules.get(parent) is not None:  # ``from parent import child``
            monkeypatch.delattr(sys.modules[parent], child, raising=False)


def test_require_names_the_extra_in_one_line() -> None:
    with pytest.raises(MissingDependency) as caught:
        require("carbonpipe_no_such_module", extra="esg", what="ESG reports")
    exc = caught.value
    assert str(exc) == ESG_LINE == missing_message("esg", "ESG reports")
    assert isinstance(exc, CarbonpipeError) and isinstance(exc, ImportError)
    assert (exc.extra, exc.module, exc.name) == ("esg", *("carbonpipe_no_such_module",) * 2)
    assert isinstance(exc.__cause__, ModuleNotFoundError)


def test_require_returns_the_module_when_it_is_there() -> None:
    assert require("json", extra="esg", what="ESG reports") is sys.modules["json"]


def test_an_import_that_fails_for_another_reason_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "carbonpipe_broken_wheel.py").write_text("raise ImportError('bad .so')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with (
            pytest.raises(ImportError, match="bad .so") as caught,
            needs_extra("esg", "ESG reports"),
        ):
            import carbonpipe_broken_wheel  # noqa: F401
    finally:
        sys.path.remove(str(tmp_path))
    assert not isinstance(caught.value, MissingDependency)


def test_esg_command_without_pyarrow_prints_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.esg.test_esg import make_record

    store = str(tmp_path / "store")
    record = make_record("train", "fit", "ml", "2026-11-03", "r1")
    open_store(store).put_if_absent(record.key, record.to_json())
    hide(monkeypatch, "pyarrow")
    code = main(["esg", "--store", store, "--period", "2026-11"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"carbonpipe esg: {ESG_LINE}"]


def test_charts_without_matplotlib_name_the_esg_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from carbonpipe.esg import charts

    hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingDependency, match=r"^ESG charts need the esg extra: pip install"):
        charts.daily_chart([{"date": "2026-11-03", "emissions_kg_co2e": 1.0}], "t")


@pytest.mark.parametrize(
    ("uri", "package", "line"),
    [
        (
            "s3://bucket/prefix",
            "boto3",
            "s3:// stores need the s3 extra: pip install 'carbonpipe[s3]'",
        ),
        ("s3://bucket/prefix", "botocore", "s3:// stores need the s3 extra"),
        ("gs://bucket/prefix", "google.cloud.storage", "gs:// stores need the gcs extra"),
        (
            "az://container/prefix",
            "azure.storage.blob",
            "Azure Blob stores need the azure extra: pip install 'carbonpipe[azure]'",
        ),
    ],
)
def test_remote_stores_without_their_sdk_name_the_extra(
    uri: str, package: str, line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(uri)  # opening does no I/O and imports no SDK
    hide(monkeypatch, package)
    with pytest.raises(MissingDependency) as caught:
        store.get("records/x.json")
    assert str(caught.value).startswith(line)


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("hidden", "statement", "line"),
    [
        (
            "kfp",
            "from carbonpipe.components import budget_gate",
            "KFP components need the kfp extra: pip install 'carbonpipe[kfp]'",
        ),
        (
            "kfp",
            "from carbonpipe.pipelines import nightly_esg_pipeline",
            "KFP pipelines need the kfp extra: pip install 'carbonpipe[kfp]'",
        ),
        (
            "airflow",
            "from carbonpipe.operators import CarbonTrackedOperator",
            "Airflow operators need the airflow extra: pip install 'carbonpipe[airflow]'",
        ),
        (
            "airflow",
            "from carbonpipe.pipelines.airflow_dags import nightly_esg_dag",
            "Airflow DAGs need the airflow extra: pip install 'carbonpipe[airflow]'",
        ),
        (
            "optuna",
            "import carbonpipe.integrations.optuna",
            "Optuna trials need the optuna extra: pip install 'carbonpipe[optuna]'",
        ),
    ],
)
def test_integrations_without_their_framework_name_the_extra(
    hidden: str, statement: str, line: str, tmp_path: Path
) -> None:
    done = _run(
        f"""
        import sys
        sys.modules[{hidden!r}] = None
        from carbonpipe.errors import MissingDependency
        try:
            {statement}
        except MissingDependency as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == line


def test_a_component_process_ends_with_the_line_not_a_traceback(tmp_path: Path) -> None:
    # What a KFP component's executor runs: the component's body, the nightly ESG job.
    done = _run(
        """
        import sys
        sys.modules["pyarrow"] = None
        from carbonpipe.integrations.kfp.esg import run_esg_aggregate
        run_esg_aggregate(store="store", period="2026-11")
        """,
        tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"carbonpipe: {ESG_LINE}"]
