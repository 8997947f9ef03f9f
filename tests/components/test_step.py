"""``@carbon_component``: the generated component keeps the user's interface and adds ours."""

import inspect
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# No `from __future__ import annotations` here: the plain @dsl.component below needs evaluated
# annotations (test_string_annotations_are_read_as_the_pod_reads_them covers ours without).


def _make(**settings):
    from kfp.dsl import Dataset, Input, Model, Output

    from carbonpipe.components import carbon_component

    @carbon_component(project="p", cloud_provider="gcp", cloud_region="europe-west1", **settings)
    def train(
        data: Input[Dataset],
        model: Output[Model],
        epochs: int = 3,
        note: str = """two
  lines""",
    ) -> float:
        """Train the model.

        Args:
            data: The data.
            epochs: Passes.
            note: A note.

        Returns:
            model: The model.
            Output: The loss.
        """
        return 0.25 * epochs

    return train


def test_component_keeps_the_users_inputs_and_adds_metrics_and_identity() -> None:
    comp = _make()
    assert comp.name == "train"
    inputs = comp.component_spec.inputs
    assert {"data", "epochs", "note"} <= set(inputs)
    assert {
        "carbon_store",
        "carbon_pipeline",
        "carbon_run_id",
        "carbon_run_name",
        "carbon_task",
        "carbon_task_id",
        "carbon_loop",
    } <= set(inputs)
    assert all(
        inputs[n].optional and inputs[n].default == "" for n in inputs if n.startswith("carbon_")
    )
    outputs = comp.component_spec.outputs
    assert outputs["carbon_metrics"].type == "system.Metrics@0.0.1"
    assert outputs["model"].type == "system.Model@0.0.1"
    assert outputs["Output"].type == "Float"


def test_docstring_documents_every_input_and_output_in_the_spec() -> None:
    comp = _make()
    spec = comp.component_spec
    assert spec.description.startswith("Train the model.")
    for name, io in {**spec.inputs, **spec.outputs}.items():
        assert io.description, name
    assert "emissions_g_co2e" in spec.outputs["carbon_metrics"].description


def test_pod_source_holds_the_users_function_unchanged_and_the_wrapper() -> None:
    comp = _make()
    source = comp.component_spec.implementation.container.command[-1]
    assert 'note: str = """two\n  lines"""' in source  # a string's shallower line survives
    assert "    return 0.25 * epochs\n" in source
    assert "def _carbonpipe_impl_train(\n    data: Input[Dataset],\n" in source
    assert "def train(\n    *,\n" in source
    assert "carbon_metrics: Output[Metrics]," in source
    assert "run_tracked_step(" in source
    compile(source, "<pod>", "exec")  # what the pod runs is valid Python


def test_settings_are_embedded_and_the_image_is_ours() -> None:
    from carbonpipe.components import RELEASE_IMAGE

    comp = _make(
        team="ranking", budget={"scope": "team:ranking", "period": "month", "limit_kg_co2e": 2.0}
    )
    container = comp.component_spec.implementation.container
    assert container.image == RELEASE_IMAGE
    assert "'team': 'ranking'" in container.command[-1]
    assert "'limit_kg_co2e': 2.0" in container.command[-1]
    # our image has kfp and carbonpipe: nothing to pip install at runtime
    assert "pip install" not in " ".join(container.command)


def test_another_base_image_installs_carbonpipe() -> None:
    from kfp.dsl import Dataset, Output

    from carbonpipe import __version__
    from carbonpipe.components import carbon_component

    @carbon_component(
        base_image="python:3.11-slim", cloud_provider="gcp", cloud_region="europe-west1"
    )
    def step(out: Output[Dataset]) -> None:
        pass

    command = " ".join(step.component_spec.implementation.container.command)
    assert f"carbonpipe[kfp]=={__version__}" in command


def test_string_annotations_are_read_as_the_pod_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user_steps.py").write_text(
        "from __future__ import annotations\n"
        "from carbonpipe.components import carbon_component\n\n"
        "@carbon_component(cloud_provider='gcp', cloud_region='europe-west1')\n"
        "def score(data: Input[Dataset], k: int = 2) -> NamedTuple('Out', [('a', float)]):\n"
        "    return (1.0,)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_steps", raising=False)
    import user_steps  # type: ignore[import-not-found]

    spec = user_steps.score.component_spec
    assert spec.inputs["data"].type == "system.Dataset@0.0.1"
    assert spec.outputs["a"].type == "Float"


def test_host_function_signature_is_keyword_only_with_the_users_defaults() -> None:
    sig = inspect.signature(_make().python_func)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
    assert sig.parameters["epochs"].default == 3
    assert sig.return_annotation is float


@pytest.mark.parametrize(
    "settings, error",
    [
        pytest.param(
            {"budget": {"scope": "nope", "period": "month", "limit_kg_co2e": 1}},
            ValueError,
            id="bad-scope",
        ),
        pytest.param({"budget": 5}, TypeError, id="budget-not-a-budget"),
        pytest.param({"labels": {"a": 1}}, TypeError, id="labels-not-strings"),
        pytest.param({"cloud_provider": "digitalocean"}, ValueError, id="unknown-provider"),
    ],
)
def test_bad_settings_fail_when_the_component_is_defined(settings: dict, error: type) -> None:
    from carbonpipe.components import carbon_component

    with pytest.raises(error):
        carbon_component(**settings)


def test_reserved_parameter_names_are_refused() -> None:
    from carbonpipe.components import carbon_component

    with pytest.raises(ValueError, match="carbon_store"):

        @carbon_component
        def step(carbon_store: str) -> None:
            pass


def test_async_functions_are_refused() -> None:
    from carbonpipe.components import carbon_component

    with pytest.raises(TypeError, match="async"):

        @carbon_component
        async def step(x: int) -> None:
            pass


def test_calling_it_in_a_pipeline_fills_identity_from_kfp_placeholders(tmp_path) -> None:
    from kfp import compiler, dsl

    comp = _make()

    @dsl.pipeline(name="identity-check")
    def pipe(n: int = 2) -> None:
        @dsl.component(base_image="python:3.11", install_kfp_package=False)
        def make(out: dsl.Output[dsl.Dataset]) -> None:
            with open(out.path, "w") as fh:
                fh.write("x")

        comp(data=make().outputs["out"], epochs=n, carbon_store="s3://b/p")

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipe, str(path))
    task = yaml.safe_load(path.read_text())["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    constants = {k: v["runtimeValue"]["constant"] for k, v in task.items() if "runtimeValue" in v}
    assert constants == {
        "carbon_pipeline": "identity-check",
        "carbon_run_id": "{{$.pipeline_job_uuid}}",
        "carbon_run_name": "{{$.pipeline_job_name}}",
        "carbon_task": "{{$.pipeline_task_name}}",
        "carbon_task_id": "{{$.pipeline_task_uuid}}",
        "carbon_store": "s3://b/p",
    }


def test_importing_components_does_not_import_kfp() -> None:
    import json
    import subprocess
    import sys

    code = (
        "import sys, json, carbonpipe.components, carbonpipe.pipelines, carbonpipe.integrations.kfp.tracked, carbonpipe.integrations.kfp.gate,"
        " carbonpipe.integrations.kfp.esg, carbonpipe.integrations.kfp.command,"
        " carbonpipe.pipelines.gated_training, carbonpipe.pipelines.nightly_esg;"
        "print(json.dumps(sorted(m for m in ('kfp', 'airflow', 'codecarbon', 'boto3') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
