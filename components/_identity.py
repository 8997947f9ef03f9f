"""Components that fill carbonpipe's identity inputs from KFP's own placeholders when called.

KFP resolves ``{{$.pipeline_job_uuid}}`` and friends only when they are a task's *argument*
(the backend's driver substitutes task inputs, not component defaults), so the components do
not ship them as defaults: calling one inside a pipeline passes them, unless the caller did.
The enclosing pipeline's name has no placeholder; it is known when the pipeline is defined,
and so is whether the task is in a ``dsl.ParallelFor`` and which of its inputs the loop feeds.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from kfp import dsl
from kfp.dsl import pipeline_channel, pipeline_context, tasks_group
from kfp.dsl.container_component_class import ContainerComponent
from kfp.dsl.python_component import PythonComponent

#: Fill the input with the name of the pipeline the task is created in.
PIPELINE_NAME = "pipeline-name"
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER
RUN_NAME = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
TASK_NAME = dsl.PIPELINE_TASK_NAME_PLACEHOLDER
TASK_ID = dsl.PIPELINE_TASK_ID_PLACEHOLDER
#: Fill the input with the names of the inputs fed by the enclosing ``dsl.ParallelFor``'s item.
LOOP_INPUTS = "loop-inputs"
# What carbonpipe.integrations.kfp.context.LOOP_WITHOUT_ITEM says: in a loop, no input from it.
_NO_ITEM = "*"


def _loop_channel_names() -> set[str]:
    """Names of the loop items of the ``dsl.ParallelFor`` groups the task is created in."""
    pipeline = pipeline_context.Pipeline.get_default_pipeline()
    names: set[str] = set()
    for group in getattr(pipeline, "groups", None) or ():
        if isinstance(group, tasks_group.ParallelFor):
            names.add(group.loop_argument.name)
    return names


def _fed_by(value: Any, loops: set[str]) -> bool:
    """Whether ``value`` (an argument) is, or is made from, one of the loop items ``loops``."""
    channels = pipeline_channel.extract_pipeline_channels_from_any(value)
    return any(
        c.name in loops or any(c.name.startswith(f"{loop}-subvar-") for loop in loops)
        for c in channels
    )


def _loop_inputs(kwargs: Mapping[str, Any]) -> str | None:
    """``None`` outside a loop; else the inputs the loop items feed, comma separated (``*``:
    none of them)."""
    loops = _loop_channel_names()
    if not loops:
        return None
    fed = sorted(name for name, value in kwargs.items() if _fed_by(value, loops))
    return ",".join(fed) or _NO_ITEM


def _value(source: str, kwargs: Mapping[str, Any]) -> str | None:
    if source == LOOP_INPUTS:
        return _loop_inputs(kwargs)
    if source != PIPELINE_NAME:
        return source
    pipeline = pipeline_context.Pipeline.get_default_pipeline()
    return None if pipeline is None else str(pipeline.name)


class _FillsIdentity:
    """Mixin: ``__call__`` adds the identity arguments the caller did not give."""

    carbon_identity: Mapping[str, str] = {}
    #: More names for outputs (alias -> output), e.g. the gate's ``decision`` for ``Output``.
    carbon_aliases: Mapping[str, str] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        given = dict(kwargs)
        if "carbon_task" in given and "carbon_task" in self.carbon_identity:
            warnings.warn(
                "carbon_task is not needed: every execution of a step (each dsl.ParallelFor "
                "iteration too) gets its own record, named after the task and the loop item",
                DeprecationWarning,
                stacklevel=2,
            )
            if "carbon_loop" in self.carbon_identity:
                given.setdefault("carbon_loop", "")  # the caller named the step: keep it
        for name, source in self.carbon_identity.items():
            if name not in given:
                value = _value(source, kwargs)
                if value is not None:
                    given[name] = value
        task = super().__call__(*args, **given)  # type: ignore[misc]
        outputs = getattr(task, "outputs", None)
        for alias, output in self.carbon_aliases.items():
            if isinstance(outputs, dict) and output in outputs:
                outputs.setdefault(alias, outputs[output])
        return task


class CarbonPythonComponent(_FillsIdentity, PythonComponent):
    """A lightweight Python component that fills its carbonpipe identity inputs."""


class CarbonContainerComponent(_FillsIdentity, ContainerComponent):
    """A container component that fills its carbonpipe identity inputs."""


def with_identity(
    component: Any, identity: Mapping[str, str], *, aliases: Mapping[str, str] | None = None
) -> Any:
    """Return ``component`` filling ``identity`` (input name -> placeholder or PIPELINE_NAME),
    its tasks' outputs also reachable by ``aliases`` (alias -> output name)."""
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
    filled.carbon_aliases = dict(aliases or {})
    return filled
