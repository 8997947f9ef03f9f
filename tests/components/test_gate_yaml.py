"""The budget_gate shipped as YAML, loaded with plain KFP (no carbonpipe on the pipeline side),
fills its run identity from KFP's placeholders and drives dsl.If under kfp.local."""

import json
from pathlib import Path

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    # our image is a Python image; its name just lacks "python"
    pytest.mark.filterwarnings("ignore:.*non-Python base image:RuntimeWarning"),
]

YAML = Path(__file__).resolve().parents[2] / "components" / "budget_gate.yaml"


def run_yaml_gate(tmp_path: Path, limit_kg: float) -> tuple[dict, list[Record], Path]:
    from kfp import components, dsl, local

    gate_op = components.load_component_from_file(str(YAML))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def guarded(marker: str) -> None:
        open(marker, "w").close()

    store = str(tmp_path / "store")
    marker = tmp_path / "guarded-ran"

    @dsl.pipeline(name="yaml-gated")
    def pipe() -> None:
        gate = gate_op(
            scope="team:ml",
            limit_kg_co2e=limit_kg,
            step="guarded",
            store=store,
            estimate_kg_co2e=0.5,
        )
        with dsl.If(gate.outputs["Output"] == "run"):
            guarded(marker=str(marker))

    root = tmp_path / "outputs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipe()
    [report_path] = root.glob("*/budget-gate/report")
    report = json.loads(report_path.read_text())
    st = open_store(store)
    recs = [Record.from_json(st.get(k).data) for k in st.list("records/") if k.endswith(".json")]
    return report, recs, marker


def test_the_yaml_gate_reports_kfps_run_and_its_decision_gates_the_step(tmp_path: Path) -> None:
    report, _, marker = run_yaml_gate(tmp_path, limit_kg=1.0)
    assert report["decision"] == "run" and report["fits"] is True
    assert report["run_id"] and report["run_id"].isdigit()  # kfp.local's job id
    assert report["run_name"] and report["run_name"].startswith("yaml-gated-")
    assert report["pipeline"]
    assert marker.exists()


def test_the_yaml_gate_skips_a_step_that_does_not_fit(tmp_path: Path) -> None:
    report, _, marker = run_yaml_gate(tmp_path, limit_kg=0.1)
    assert report["decision"] == "skip"
    assert report["run_id"] and report["run_id"].isdigit()
    assert not marker.exists()
