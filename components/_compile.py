"""Compile the shipped components to YAML (package data) and load them back.

The YAML always names :data:`~carbonpipe.components._image.RELEASE_IMAGE`, whatever
``CARBONPIPE_IMAGE`` says, so the files only change when a component or the version does.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any

from carbonpipe._optional import needs_extra

from ._image import RELEASE_IMAGE

HERE = Path(__file__).resolve().parent

#: Component name -> module whose ``build(image)`` returns it.
SHIPPED: dict[str, str] = {
    "budget_gate": "carbonpipe.components.gate",
    "esg_aggregate": "carbonpipe.components.esg",
    "tracked_command": "carbonpipe.components.command",
    "wait_for_clean_grid": "carbonpipe.components.shift",
}


def yaml_path(name: str, directory: str | Path | None = None) -> Path:
    """Where the compiled ``name`` lives: ``<directory or this package>/<name>.yaml``."""
    if name not in SHIPPED:
        raise ValueError(f"unknown component {name!r}; shipped: {', '.join(SHIPPED)}")
    return Path(directory or HERE) / f"{name}.yaml"


def compile_components(
    directory: str | Path | None = None, *, image: str = RELEASE_IMAGE
) -> list[Path]:
    """Compile every shipped component into ``directory`` (default: this package); return paths."""
    with needs_extra("kfp", "KFP components"):
        from kfp import compiler

    written = []
    for name, module in SHIPPED.items():
        component = importlib.import_module(module).build(image)
        path = yaml_path(name, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written


def stale_components(scratch: str | Path) -> dict[str, str]:
    """Compile into ``scratch`` and return ``{name: unified diff}`` of shipped YAML out of date."""
    stale = {}
    for fresh in compile_components(scratch):
        shipped = HERE / fresh.name
        old = shipped.read_text() if shipped.exists() else ""
        new = fresh.read_text()
        if old != new:
            diff = difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), str(shipped), f"compiled {fresh.name}"
            )
            stale[fresh.stem] = "".join(diff)
    return stale


def load_component(name: str) -> Any:
    """Load a shipped component from its YAML, e.g. ``load_component("budget_gate")``.

    The loaded component is plain KFP: pass ``pipeline`` and ``run_id`` yourself (e.g.
    ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``) if you want them in the report.
    """
    with needs_extra("kfp", "KFP components"):
        from kfp import components

    return components.load_component_from_file(str(yaml_path(name)))
