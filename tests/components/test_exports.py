"""``carbonpipe.components`` and ``carbonpipe.pipelines`` export what ``__all__`` says, lazily."""

from __future__ import annotations

import pytest

import carbonpipe.components
import carbonpipe.pipelines

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize(
    "package, names",
    [
        pytest.param(
            carbonpipe.components,
            {
                "carbon_component",
                "tracked_command",
                "budget_gate",
                "esg_aggregate",
                "load_component",
            },
            id="components",
        ),
        pytest.param(
            carbonpipe.pipelines,
            {"gated_training_pipeline", "nightly_esg_pipeline", "nightly_esg_dag"},
            id="pipelines",
        ),
    ],
)
def test_every_exported_name_resolves(package: object, names: set[str]) -> None:
    exported = package.__all__  # type: ignore[attr-defined]
    assert set(exported) >= names and sorted(exported) == exported
    for name in exported:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError):
        package.nope  # type: ignore[attr-defined]  # noqa: B018


def test_shipped_components_are_kfp_components() -> None:
    from kfp.dsl.base_component import BaseComponent

    from carbonpipe.components import budget_gate, esg_aggregate, tracked_command

    for component in (budget_gate, esg_aggregate, tracked_command):
        assert isinstance(component, BaseComponent)
