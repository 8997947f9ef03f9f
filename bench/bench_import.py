"""How much carbonpipe's Airflow provider adds to a DAG file's import time.

The scheduler's DAG processor imports every DAG file again and again, so the provider must cost
almost nothing. Each sample is a fresh interpreter that first imports ``airflow.sdk`` (what
any DAG file pays anyway) and then times, with ``perf_counter``, only our import on top:

* ``import carbonpipe.operators``: the package (lazy names). Airflow's provider discovery
  already imports it (through the ``apache_airflow_provider`` entry point) while
  ``airflow.sdk`` initialises, so the sample forgets every ``carbonpipe`` module first and
  times importing it again: the cost discovery pays inside the baseline;
* ``from carbonpipe.operators import (3 classes)``: ``CarbonTrackedOperator``,
  ``CarbonBudgetGateOperator`` and ``CarbonBudgetSensor``, the classes a DAG file uses (this
  also loads the standard provider's ``PythonOperator`` unless the DAG file already did);
* the same after the DAG file imported ``PythonOperator`` itself: carbonpipe's own share.

(-X importtime cannot attribute these: modules loaded through ``importlib.import_module``, as
entry points and lazy names are, bypass its hook.)

Usage: ``python bench/bench_import.py [--runs 15]``; prints medians in milliseconds and exits
non-zero when the package and the classes together add more than the 30 ms goal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

GOAL_MS = 30.0
HEAVY = ("codecarbon", "pandas", "boto3", "google.cloud.storage")

_PRELUDE = "from airflow.sdk import DAG, BaseOperator, task\n"
_CASES = {
    "import carbonpipe.operators": (
        "for _m in [m for m in sys.modules if m.startswith('carbonpipe')]:\n    del sys.modules[_m]\n",
        "import carbonpipe.operators",
    ),
    "from carbonpipe.operators import (3 classes)": (
        "",
        "from carbonpipe.operators import CarbonTrackedOperator, CarbonBudgetGateOperator, "
        "CarbonBudgetSensor",
    ),
    "  same, PythonOperator already imported": (
        "from airflow.providers.standard.operators.python import PythonOperator\n",
        "from carbonpipe.operators import CarbonTrackedOperator, CarbonBudgetGateOperator, "
        "CarbonBudgetSensor",
    ),
}
_TEMPLATE = """
import sys, time
{prelude}{setup}
t0 = time.perf_counter()
{stmt}
dt = time.perf_counter() - t0
heavy = [m for m in {heavy!r} if m in sys.modules]
print(f"{{dt * 1000:.3f}} {{','.join(heavy) or '-'}}")
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    home = env.get("AIRFLOW_HOME") or tempfile.mkdtemp(prefix="carbonpipe-bench-airflow-")
    env.setdefault("AIRFLOW_HOME", home)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    return env


def _sample(setup: str, stmt: str, env: dict[str, str]) -> tuple[float, str]:
    code = _TEMPLATE.format(prelude=_PRELUDE, setup=setup, stmt=stmt, heavy=HEAVY)
    out = (
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    ms, heavy = out.split(" ", 1)
    return float(ms), heavy


def _baseline(env: dict[str, str]) -> float:
    code = (
        "import time; t0 = time.perf_counter()\nimport airflow.sdk\n"
        + _PRELUDE
        + ("print((time.perf_counter() - t0) * 1000)")
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per case")
    args = parser.parse_args(argv)
    env = _env()
    _sample("", "pass", env)  # warm the file cache and .pyc files
    base = statistics.median(_baseline(env) for _ in range(args.runs))
    print(f"baseline: import airflow.sdk + DAG, BaseOperator, task: median {base:.1f} ms")
    medians: dict[str, float] = {}
    for label, (setup, stmt) in _CASES.items():
        samples = [_sample(setup, stmt, env) for _ in range(args.runs)]
        ms = statistics.median(s[0] for s in samples)
        heavy = sorted({h for _, hs in samples for h in hs.split(",") if h != "-"})
        medians[label] = ms
        print(
            f"{label:<48} added: median {ms:6.2f} ms  (min {min(s[0] for s in samples):.2f}, "
            f"max {max(s[0] for s in samples):.2f}; heavy modules: {', '.join(heavy) or 'none'})"
        )
    total = (
        medians["import carbonpipe.operators"]
        + medians["from carbonpipe.operators import (3 classes)"]
    )
    ok = total <= GOAL_MS
    print(
        f"added in all (package + classes): {total:.2f} ms; goal <= {GOAL_MS:.0f} ms: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
