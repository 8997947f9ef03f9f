"""``@task.carbon_tracked``: the TaskFlow form of :class:`CarbonTrackedOperator`.

Registered through the provider's ``task-decorators`` entry, so ``from airflow.sdk import task``
and ``@task.carbon_tracked(project=..., store=..., budget=...)`` work in any DAG file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow operators"):
    from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from carbonpipe.operators.tracked import CarbonTrackedOperator

if TYPE_CHECKING:
    from airflow.sdk.bases.decorator import TaskDecorator


class _CarbonTrackedDecoratedOperator(DecoratedOperator, CarbonTrackedOperator):
    """A decorated function run as a carbon-tracked step (see :class:`CarbonTrackedOperator`).

    :param python_callable: the decorated function.
    :param op_args: positional arguments of the call (templated).
    :param op_kwargs: keyword arguments of the call (templated).
    """

    template_fields: Sequence[str] = CarbonTrackedOperator.template_fields
    template_fields_renderers = CarbonTrackedOperator.template_fields_renderers
    custom_operator_name: str = "@task.carbon_tracked"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs_to_upstream = {
            "python_callable": python_callable,
            "op_args": op_args,
            "op_kwargs": op_kwargs,
        }
        super().__init__(
            kwargs_to_upstream=kwargs_to_upstream,
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )


def carbon_tracked_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """Wrap a function into a carbon-tracked Airflow task.

    Accepts the arguments of :class:`CarbonTrackedOperator` (``project``, ``pipeline``,
    ``team``, ``budget``, ``carbon_budget_g``, ``on_exceed``, ``store``, ``aws_conn_id``,
    ``gcp_conn_id``, ``azure_conn_id``, ...) and of ``BaseOperator``.

    :param python_callable: the function to decorate.
    :param multiple_outputs: unroll a returned dict into one XCom per key.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_CarbonTrackedDecoratedOperator,
        **kwargs,
    )
