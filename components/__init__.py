"""Kubeflow Pipelines components that measure, gate and report the carbon of ML steps.

* :func:`carbon_component`  decorator: a lightweight component whose body is a tracked step.
* ``tracked_command``        container component: any command under ``carbonpipe run``.
* ``budget_gate``            does the next step fit its carbon budget? (for ``dsl.If``)
* ``esg_aggregate``          the nightly ESG report of a store.
* ``wait_for_clean_grid``    wait until the grid is cleanest within a deadline (before a step).
* :func:`run_tracked_command_locally`  try ``tracked_command`` here (KFP's local runner cannot).

Names resolve lazily: importing this package does not import kfp; the first use of a
component does. Each component is also shipped compiled (``<name>.yaml`` beside this file,
see :func:`load_component`), built by ``python -m carbonpipe.components --compile``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carbonpipe._lazy import lazy_exports
from carbonpipe._optional import needs_extra

_EXPORTS: dict[str, str] = {
    "carbon_component": "carbonpipe.components.step",
    "tracked_command": "carbonpipe.components.command",
    "budget_gate": "carbonpipe.components.gate",
    "esg_aggregate": "carbonpipe.components.esg",
    "wait_for_clean_grid": "carbonpipe.components.shift",
    "load_component": "carbonpipe.components._compile",
    "compile_components": "carbonpipe.components._compile",
    "run_local": "carbonpipe.components._local",
    "run_tracked_command_locally": "carbonpipe.components._try_command",
    "compile_pipeline": "carbonpipe.components._local",
    "component_image": "carbonpipe.components._image",
    "RELEASE_IMAGE": "carbonpipe.components._image",
}

__all__ = sorted(_EXPORTS)


_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


def __getattr__(name: str) -> Any:
    # Without kfp: "KFP components need the kfp extra: pip install 'carbonpipe[kfp]'".
    with needs_extra("kfp", "KFP components"):
        return _lazy_getattr(name)


if TYPE_CHECKING:
    from ._compile import compile_components as compile_components
    from ._compile import load_component as load_component
    from ._image import RELEASE_IMAGE as RELEASE_IMAGE
    from ._image import component_image as component_image
    from ._local import compile_pipeline as compile_pipeline
    from ._local import run_local as run_local
    from ._try_command import run_tracked_command_locally as run_tracked_command_locally
    from .command import tracked_command as tracked_command
    from .esg import esg_aggregate as esg_aggregate
    from .gate import budget_gate as budget_gate
    from .shift import wait_for_clean_grid as wait_for_clean_grid
    from .step import carbon_component as carbon_component
