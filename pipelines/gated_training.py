"""A training pipeline whose training only runs while the carbon budget allows it.

preprocess → budget_gate → (fits) train → evaluate, or (spent) training_skipped. Every step but
the gate is a tracked step (``@carbon_component``): its record goes to the store, charged to
the pipeline's budget, and its footprint shows in the KFP UI as ``carbon_metrics``.

    python -m carbonpipe.pipelines.gated_training --compile gated_training.yaml
    python -m carbonpipe.pipelines.gated_training --run-local --store ./carbon-artifacts

Importing this module does not import kfp: ``gated_training_pipeline`` is built on first access.
(No ``from __future__ import annotations`` here: KFP reads the components' annotations.)
"""

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from carbonpipe._optional import needs_extra
from carbonpipe.pipelines._cli import DEFAULT_STORE, compile_or_run, lazy_pipeline, pipeline_parser

PIPELINE_NAME = "gated-training"
# Name the location: the demo never probes a cloud metadata server.
LOCATION = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}
PROJECT = "carbonpipe-demo"

__all__ = ["PIPELINE_NAME", "build_pipeline", "gated_training_pipeline", "main"]

#: The KFP pipeline, built on first access (see ``__getattr__``).
gated_training_pipeline: Any


def build_pipeline() -> Any:
    """Define the components and the pipeline (imports kfp)."""
    with needs_extra("kfp", "KFP pipelines"):
        from kfp import dsl
        from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

    from carbonpipe.components import budget_gate, carbon_component, component_image

    @carbon_component(project=PROJECT, **LOCATION)
    def preprocess(dataset: Output[Dataset], n_samples: int = 200, seed: int = 7) -> int:
        """Make a synthetic regression data set, y = 3x + 2 + noise, as CSV.

        Args:
            n_samples: Number of rows.
            seed: Random seed.

        Returns:
            dataset: CSV with columns x and y.
            Output: Number of rows written.
        """
        import random

        rng = random.Random(seed)
        with open(dataset.path, "w") as fh:
            fh.write("x,y\n")
            for _ in range(n_samples):
                x = rng.uniform(0, 10)
                fh.write(f"{x},{3.0 * x + 2.0 + rng.gauss(0, 1)}\n")
        dataset.metadata["rows"] = n_samples
        return n_samples

    @carbon_component(project=PROJECT, **LOCATION)
    def train(
        dataset: Input[Dataset],
        model: Output[Model],
        epochs: int = 200,
        learning_rate: float = 0.01,
    ) -> float:
        """Fit y = w*x + b by gradient descent.

        Args:
            dataset: CSV with columns x and y.
            epochs: Passes over the data.
            learning_rate: Gradient step.

        Returns:
            model: JSON with w and b.
            Output: Final training mean squared error.
        """
        import json

        with open(dataset.path) as fh:
            rows = [tuple(map(float, line.split(","))) for line in fh.read().splitlines()[1:]]
        w = b = 0.0
        n = len(rows)
        for _ in range(epochs):
            gw = sum((w * x + b - y) * x for x, y in rows) * 2 / n
            gb = sum(w * x + b - y for x, y in rows) * 2 / n
            w, b = w - learning_rate * gw, b - learning_rate * gb
        mse = sum((w * x + b - y) ** 2 for x, y in rows) / n
        with open(model.path, "w") as fh:
            json.dump({"w": w, "b": b}, fh, allow_nan=False)
        model.metadata["framework"] = "pure-python"
        return mse

    @carbon_component(project=PROJECT, **LOCATION)
    def evaluate(dataset: Input[Dataset], model: Input[Model], scores: Output[Metrics]) -> float:
        """Score the model on the data set.

        Args:
            dataset: CSV with columns x and y.
            model: JSON with w and b.

        Returns:
            scores: mse and rmse, for the KFP UI.
            Output: The mean squared error.
        """
        import json
        import math

        with open(model.path) as fh:
            params = json.load(fh)
        with open(dataset.path) as fh:
            rows = [tuple(map(float, line.split(","))) for line in fh.read().splitlines()[1:]]
        mse = sum((params["w"] * x + params["b"] - y) ** 2 for x, y in rows) / len(rows)
        scores.log_metric("mse", mse)
        scores.log_metric("rmse", math.sqrt(mse))
        return mse

    @dsl.component(base_image=component_image(), install_kfp_package=False)
    def training_skipped(report: Input[Artifact]) -> str:
        """Say why training did not run: the gate's message.

        Args:
            report: The budget gate's JSON report.

        Returns:
            Output: The gate's message.
        """
        import json

        with open(report.path) as fh:
            message = json.load(fh)["message"]
        print(f"training skipped: {message}")
        return message

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Preprocess, then train and evaluate while the carbon budget allows.",
    )
    def gated_training_pipeline(
        store: str = DEFAULT_STORE,
        budget_scope: str = f"pipeline:{PIPELINE_NAME}",
        budget_limit_kg: float = 1.0,
        budget_period: str = "month",
        train_estimate_kg: float = -1.0,
        strict: bool = False,
        n_samples: int = 200,
        epochs: int = 200,
    ) -> str:
        """Preprocess, gate on the carbon budget, then train and evaluate.

        Args:
            store: Store for records and the budget ledger: a folder, s3://bucket/prefix or gs://bucket/prefix.
            budget_scope: The budget training is gated on, pipeline:NAME or team:NAME.
            budget_limit_kg: Its limit for the period, in kg CO2e.
            budget_period: Its period: month, quarter, year or total.
            train_estimate_kg: Expected training emissions in kg CO2e; negative: its baseline or last run.
            strict: Fail the run, instead of skipping training, when the budget is spent.
            n_samples: Rows of synthetic data.
            epochs: Training passes.

        Returns:
            Output: The gate's decision, run or skip.
        """
        prep = preprocess(n_samples=n_samples, carbon_store=store)
        gate = budget_gate(
            scope=budget_scope,
            limit_kg_co2e=budget_limit_kg,
            period=budget_period,
            step="train",
            estimate_kg_co2e=train_estimate_kg,
            strict=strict,
            store=store,
        ).after(prep)
        with dsl.If(gate.outputs["decision"] == "run", name="budget-allows-training"):
            trained = train(dataset=prep.outputs["dataset"], epochs=epochs, carbon_store=store)
            evaluate(
                dataset=prep.outputs["dataset"], model=trained.outputs["model"], carbon_store=store
            )
        with dsl.Else(name="budget-spent"):
            training_skipped(report=gate.outputs["report"])
        return gate.outputs["decision"]

    return gated_training_pipeline


__getattr__ = lazy_pipeline(__name__, "gated_training_pipeline", build_pipeline)


def _run(pipeline: Any, args: argparse.Namespace) -> str:
    from carbonpipe.components import run_local

    task = run_local(
        pipeline,
        pipeline_root=args.pipeline_root,
        store=args.store,
        budget_limit_kg=args.budget_limit_kg,
        train_estimate_kg=args.train_estimate_kg,
        strict=args.strict,
    )
    return f"gated-training: decision={task.output} store={args.store}"


def main(argv: Sequence[str] | None = None) -> int:
    """``--compile OUT.yaml`` and/or ``--run-local``; see the module docstring."""
    parser = pipeline_parser(
        "python -m carbonpipe.pipelines.gated_training",
        __doc__.split("\n")[0],
        store_help="records and budget ledger",
    )
    parser.add_argument("--budget-limit-kg", type=float, default=1.0)
    parser.add_argument("--train-estimate-kg", type=float, default=-1.0)
    parser.add_argument("--strict", action="store_true", help="fail instead of skipping training")
    return compile_or_run(parser, argv, build_pipeline, _run)


if __name__ == "__main__":
    sys.exit(main())
