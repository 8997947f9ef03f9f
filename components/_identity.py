"""Components that fill carbonpipe's identity inputs from KFP's own placeholders when called.

KFP resolves ``{{$.pipeline_job_uuid}}`` and friends only when they are a task's *argument*
(the backend's driver substitutes task inputs, not component defaults), so the components do
not ship them as defaults: calling one inside a pipeline passes them, unless the caller did.
The enclosing pipeline's name has no placeholder; it is known when the pipeline is defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfp import dsl
from kfp.dsl import pipeline_context
from kfp.dsl.container_component_class import ContainerComponent
from kfp.dsl.python_component import PythonComponent

#: Fill the input with the name of the pipeline the task is created in.
PIPELINE_NAME = "pipeline-name"
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER
RUN_NAME = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
TASK_NAME = dsl.PIPELINE_TASK_NAME_PLACEHOLDER


def _value(source: str) -> str | None:
    if source != PIPELINE_NAME:
        return source
    pipeline = pipeline_context.Pipeline.get_default_pipeline()
    return None if pipeline is None else str(pipeline.name)


class _FillsIdentity:
    """Mixin: ``__call__`` adds the identity arguments the caller did not give."""

    carbon_identity: Mapping[str, str] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for name, source in self.carbon_identity.items():
            if name not in kwargs:
                value = _value(source)
                if value is not None:
                    kwargs[name] = value
        return super().__call__(*args, **kwargs)  # type: ignore[misc]


class CarbonPythonComponent(_FillsIdentity, PythonComponent):
    """A lightweight Python component that fills its carbonpipe identity inputs."""


class CarbonContainerComponent(_FillsIdentity, ContainerComponent):
    """A container component that fills its carbonpipe identity inputs."""


def with_identity(component: Any, identity: Mapping[str, str]) -> Any:
    """Return ``component`` filling ``identity`` (input name -> placeholder or PIPELINE_NAME)."""
    missing = set(identity) - set(component.component_spec.inputs or {})
    if missing:
        raise ValueError(f"{component.name} has no input(s) {sorted(missing)} to fill")
    filled: Any
    if isinstance(component, PythonComponent):
        filled = CarbonPythonComponent(component.component_spec, component.python_func)
    elif isinstance(component, ContainerComponent):
        filled = CarbonContainerComponent(component.component_spec, component.pipeline_func)
    else:
        raise TypeError(f"cannot fill the identity of a {type(component).__name__}")
    filled.carbon_identity = dict(identity)
    return filled
