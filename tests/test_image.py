"""The image runs every shipped component: the Dockerfile's install, replayed without Docker.

SLOW (about a minute with a warm pip cache, several on the first run): a fresh virtual
environment gets exactly the Dockerfile's ``pip install`` line, run against exactly the files
its ``COPY`` lines put in the build context; then every component of ``components/*.yaml`` is
started the way KFP starts its container (the YAML's command and arguments, placeholders filled
by kfp.local's own resolver, the venv first on PATH as the image's ``ENV PATH`` puts it). An
extra a component needs and the Dockerfile forgets fails here, not on the cluster.

pip's cache (``PIP_CACHE_DIR``, its default folder otherwise) is used, so reruns are fast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store
from tests.components.test_image import _instructions
from tests.esg.test_esg import make_record

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPONENTS = sorted((ROOT / "components").glob("*.yaml"))
MISSING_ESG = "ESG reports need the esg extra: pip install 'carbonpipe[esg]'"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),  # the install; a warm pip cache makes it about a minute
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


# -- the Dockerfile, read -----------------------------------------------------------------------


def pip_install_args(dockerfile: str) -> list[str]:
    """The arguments of the one ``pip install`` the Dockerfile runs (``['.[kfp,...]']``)."""
    found = []
    for kind, args in _instructions(dockerfile):
        if kind != "RUN":
            continue
        for command in args.split("&&"):
            words = shlex.split(command)
            if len(words) > 2 and words[0].endswith("pip") and words[1] == "install":
                found.append(words[2:])
    assert len(found) == 1, f"expected one pip install in the Dockerfile, found {found}"
    return found[0]


def build_context(dockerfile: str, dest: Path) -> Path:
    """Copy what the build stage's ``COPY`` lines copy (git's files, not its ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    files = [f for f in listed.split("\0") if f and (ROOT / f).is_file()]
    copies = [a for k, a in _instructions(dockerfile) if k == "COPY" and "--from" not in a]
    assert copies, "the Dockerfile copies nothing"
    for copy in copies:
        *sources, target = shlex.split(copy)
        for source in sources:
            for name in files:
                if source.endswith("/") and name.startswith(source):
                    into = dest / target / name[len(source) :]
                elif name == source:
                    into = dest / target / Path(name).name
                else:
                    continue
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, into)
    return dest


def test_the_dockerfile_installs_the_esg_extra() -> None:
    [spec] = pip_install_args(DOCKERFILE.read_text())
    extras = set(re.fullmatch(r"\.\[([\w,]+)\]", spec).group(1).split(","))  # type: ignore[union-attr]
    assert {"kfp", "esg"} <= extras


# -- the image, without Docker ------------------------------------------------------------------


def _env(venv: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",  # the image's ENV PATH
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        CARBONPIPE_CLOUD_DETECTION="off",
        **extra,
    )
    return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding exactly what the Dockerfile's build stage installs."""
    dockerfile = DOCKERFILE.read_text()
    root = tmp_path_factory.mktemp("image")
    src = build_context(dockerfile, root / "src")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", *pip_install_args(dockerfile)],
        cwd=src,  # the Dockerfile's WORKDIR, where its COPY lines put the package
        env=_env(venv, root),
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    yield venv


def container_command(yaml_path: Path, arguments: dict[str, Any], task_root: Path) -> list[str]:
    """The command KFP runs in the component's container, its placeholders filled in."""
    from google.protobuf import json_format
    from kfp import components
    from kfp.local import executor_input_utils, placeholder_utils

    spec = components.load_component_from_file(str(yaml_path)).pipeline_spec
    [task] = spec.root.dag.tasks.values()
    component = spec.components[task.component_ref.name]
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    container = executors[component.executor_label]["container"]
    executor_input = executor_input_utils.construct_executor_input(
        component, arguments, str(task_root), block_input_artifact=True
    )
    task_root.mkdir(parents=True, exist_ok=True)
    return placeholder_utils.replace_placeholders(
        [*container["command"], *container["args"]],
        json_format.MessageToDict(executor_input),
        "image-test-run",
        yaml_path.stem,
        str(task_root.parent),
        "4242",
    )


def run_component(
    venv: Path, tmp: Path, name: str, arguments: dict[str, Any]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    task_root = tmp / "tasks" / name
    command = container_command(ROOT / "components" / f"{name}.yaml", arguments, task_root)
    done = subprocess.run(
        command,
        cwd=tmp,
        env=_env(venv, tmp / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, task_root


def _days_ago(n: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=n)).date().isoformat()


def _arguments(venv: Path, store: str) -> dict[str, dict[str, Any]]:
    """What each shipped component gets in this test: one entry per components/*.yaml."""
    identity = {"store": store, "pipeline": "image-test", "run_id": "4242"}
    return {
        "budget_gate": {
            **identity,
            "scope": "pipeline:image-test",
            "limit_kg_co2e": 5.0,
            "step": "train",
            "estimate_kg_co2e": 0.01,
        },
        "tracked_command": {
            **identity,
            "step": "train",
            "command": [str(venv / "bin" / "python"), "-c", "print('trained')"],
            "project": "acme",
            "cloud_provider": "gcp",
            "cloud_region": "europe-west1",
        },
        # The last week: closed days (compacted to Parquet first) and today's tracked step.
        "esg_aggregate": {"store": store, "period": f"{_days_ago(7)}_{_days_ago(0)}"},
        # No forecast source configured: it plans to start at once, and says why.
        "wait_for_clean_grid": {"shift_within": "60s", "expected_duration": "10s"},
    }


def test_every_shipped_component_runs_from_the_images_install(image: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    closed = [
        make_record("image-test", "prep", "ml", _days_ago(n), f"r{n}", cpu=0.5) for n in (3, 2, 1)
    ]
    for record in closed:
        open_store(store).put_if_absent(record.key, record.to_json())
    arguments = _arguments(image, store)
    assert sorted(arguments) == [p.stem for p in COMPONENTS], "a component this test skips"

    outputs = {}
    # The ESG job reads the step, so it runs after it.
    for name in ("wait_for_clean_grid", "budget_gate", "tracked_command", "esg_aggregate"):
        done, task_root = run_component(image, tmp_path, name, arguments[name])
        assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}{done.stderr[-6000:]}"
        assert "Traceback" not in done.stderr, done.stderr
        outputs[name] = json.loads((task_root / "executor_output.json").read_text())

    plan = json.loads(outputs["wait_for_clean_grid"]["parameterValues"]["Output"])
    assert plan["planned_start"] == plan["decided_at"] and plan["reason"], plan

    gate = outputs["budget_gate"]["parameterValues"]  # "decision" (and "fits"), or "Output"
    assert gate.get("decision", gate.get("Output")) == "run", gate

    [metrics] = outputs["tracked_command"]["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["energy_kwh"] >= 0
    step = Record.from_json((tmp_path / "tasks" / "tracked_command" / "record").read_bytes())
    assert (step.pipeline, step.step, step.run_id) == ("image-test", "train", "4242")

    summary = json.loads((tmp_path / "tasks" / "esg_aggregate" / "summary").read_text())
    assert summary["totals"]["step_attempts"] == 4, summary["totals"]
    assert summary["compaction"]["days_compacted"] >= 1, summary  # Parquet parts, by pyarrow
    assert "<html" in (tmp_path / "tasks" / "esg_aggregate" / "report").read_text().lower()
    assert list(open_store(store).list("esg/")), "no report in the store"
    [totals] = outputs["esg_aggregate"]["artifacts"]["totals"]["artifacts"]
    assert totals["metadata"]["total_emissions_kg_co2e"] > 0


def test_without_the_esg_extra_the_esg_job_says_which_extra_in_one_line(
    image: Path, tmp_path: Path
) -> None:
    pip = str(image / "bin" / "pip")
    env = _env(image, tmp_path)
    version = subprocess.run(
        [str(image / "bin" / "python"), "-c", "import pyarrow; print(pyarrow.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([pip, "uninstall", "-q", "-y", "pyarrow"], env=env, check=True, timeout=120)
    try:
        store = str(tmp_path / "store")
        record = make_record("image-test", "prep", "ml", _days_ago(1), "r1")
        open_store(store).put_if_absent(record.key, record.to_json())
        esg = _arguments(image, store)["esg_aggregate"]
        done, _ = run_component(image, tmp_path, "esg_aggregate", esg)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr
        assert MISSING_ESG in done.stderr.splitlines()[-1], done.stderr

        cli = subprocess.run(
            [str(image / "bin" / "carbonpipe"), "esg", "--store", store, "--period", esg["period"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 2, cli.stdout + cli.stderr
        assert "Traceback" not in cli.stderr, cli.stderr
        assert cli.stderr.strip().splitlines() == [f"carbonpipe esg: {MISSING_ESG}"]
    finally:  # the module's venv goes back to what the image holds
        subprocess.run(
            [pip, "install", "-q", f"pyarrow=={version}"], env=env, check=True, timeout=600
        )
