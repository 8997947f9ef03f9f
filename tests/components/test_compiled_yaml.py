"""The component YAML shipped as package data: up to date, loadable, on our image, documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from carbonpipe.components import _compile, _image

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_shipped_yaml_is_up_to_date_with_the_python_definitions(tmp_path: Path) -> None:
    stale = _compile.stale_components(tmp_path)
    assert not stale, "run `python -m carbonpipe.components --compile`:\n" + "\n".join(
        stale.values()
    )


def test_check_command_reports_success() -> None:
    from carbonpipe.components.__main__ import main

    assert main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(_compile.SHIPPED))
def test_shipped_yaml_loads_and_names_the_release_image(name: str) -> None:
    from kfp import components

    path = _compile.yaml_path(name)
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == name.replace("_", "-")
    spec = yaml.safe_load(path.read_text())
    images = [e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()]
    assert images == [_image.RELEASE_IMAGE]


@pytest.mark.parametrize("name", sorted(_compile.SHIPPED))
def test_every_input_and_output_is_documented(name: str) -> None:
    spec = yaml.safe_load(_compile.yaml_path(name).read_text())
    component = next(iter(spec["components"].values()))
    assert spec["root"].get("inputDefinitions") or component.get("inputDefinitions")
    for kind in ("inputDefinitions", "outputDefinitions"):
        for group in component.get(kind, {}).values():
            for io_name, io in group.items():
                assert io.get("description"), f"{name}: {kind} {io_name} has no description"


def test_budget_gate_yaml_declares_the_decision_outputs() -> None:
    spec = yaml.safe_load(_compile.yaml_path("budget_gate").read_text())
    outputs = spec["components"]["comp-budget-gate"]["outputDefinitions"]
    # one plain return: a NamedTuple field is lost by kfp.local in a dsl.If without dsl.Else
    assert set(outputs["parameters"]) == {"Output"}
    assert outputs["parameters"]["Output"]["parameterType"] == "STRING"
    assert outputs["artifacts"]["status"]["artifactType"]["schemaTitle"] == "system.Metrics"
    inputs = spec["components"]["comp-budget-gate"]["inputDefinitions"]["parameters"]
    assert {"scope", "limit_kg_co2e", "strict", "store", "period"} <= set(inputs)
    # loaded from YAML, the gate still knows its run: kfp resolves these defaults
    assert inputs["run_id"]["defaultValue"] == "{{$.pipeline_job_uuid}}"
    assert inputs["run_name"]["defaultValue"] == "{{$.pipeline_job_name}}"


def test_compiling_ignores_the_image_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CARBONPIPE_IMAGE", "dev/carbonpipe:local")
    path = _compile.compile_components(tmp_path)[0]
    assert _image.RELEASE_IMAGE in path.read_text()
    assert "dev/carbonpipe:local" not in path.read_text()


def test_load_component_helper_rejects_unknown_names() -> None:
    from carbonpipe.components import load_component

    assert load_component("budget_gate").name == "budget-gate"
    with pytest.raises(ValueError, match="budget_gate"):
        load_component("nope")


def test_loaded_gate_runs_in_a_local_pipeline(tmp_path: Path) -> None:
    from kfp import dsl

    from carbonpipe.components import load_component, run_local

    gate = load_component("budget_gate")

    def pipe(store):  # type: ignore[no-untyped-def]
        return gate(
            scope="pipeline:yaml-gate", limit_kg_co2e=1.0, step="train", store=store
        ).outputs["Output"]  # a loaded component has no "decision" alias

    # this module's annotations are strings (PEP 563); KFP reads real types
    pipe.__annotations__ = {"store": str, "return": str}
    pipeline = dsl.pipeline(name="yaml-gate")(pipe)
    task = run_local(pipeline, pipeline_root=tmp_path / "outputs", store=str(tmp_path / "store"))
    assert task.output == "run"
