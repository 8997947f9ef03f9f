"""Compile a pipeline, or run it on this machine with KFP's local runner (no cluster, no Docker).

``run_local`` uses ``kfp.local.SubprocessRunner(use_venv=False)``: every task runs in a
subprocess of this Python, which must have carbonpipe and kfp installed (nothing is pip
installed, so it works offline). Tasks inherit this process's environment, which is how a store
endpoint (``AWS_ENDPOINT_URL``) or ``CARBONPIPE_*`` settings reach them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from carbonpipe._optional import needs_extra


def compile_pipeline(pipeline: Any, path: str | os.PathLike[str]) -> Path:
    """Compile ``pipeline`` to the IR YAML at ``path``; return the path."""
    with needs_extra("kfp", "KFP components"):
        from kfp import compiler

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    return out


def run_local(
    pipeline: Any, *, pipeline_root: str | os.PathLike[str] = "./local_outputs", **arguments: Any
) -> Any:
    """Run ``pipeline(**arguments)`` with KFP's subprocess runner; return its task (``.outputs``).

    Raises ``RuntimeError`` when a task fails (KFP's ``raise_on_error``).
    """
    with needs_extra("kfp", "KFP components"):
        from kfp import local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # The runner warns for any image whose name lacks "python"; ours is a Python image.
        warnings.filterwarnings(
            "ignore", message=".*non-Python base image.*", category=RuntimeWarning
        )
        return pipeline(**arguments)
