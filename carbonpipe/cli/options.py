"""The options of ``carbonpipe run``, as argparse keyword arguments, in tables.

The parser is built from these tables, and so is the scan that reads a plain ``run`` command
line before argparse is imported (:func:`carbonpipe.cli.run.scan_run`).
"""

from __future__ import annotations

from carbonpipe.cli.units import UNIT_OPTIONS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any


# The options of ``carbonpipe run``, as argparse keyword arguments. The parser is built from these
# tables, and so is the scan that reads a plain ``run`` command line before argparse is imported.
_IDENTITY_OPTIONS: dict[str, dict[str, Any]] = {
    "--project": {"help": "project name (CARBONPIPE_PROJECT)"},
    "--experiment": {"help": "experiment name (CARBONPIPE_EXPERIMENT)"},
    "--pipeline": {"help": "pipeline name; default: the project (CARBONPIPE_PIPELINE)"},
    "--team": {"help": "team name for team budgets (CARBONPIPE_TEAM)"},
    "--run-id": {"help": "run id grouping the steps (CARBONPIPE_RUN_ID)"},
    "--store": {"help": "folder, s3://bucket/prefix or gs://bucket/prefix (CARBONPIPE_STORE)"},
    "--config": {"help": "carbon.yaml to read (CARBONPIPE_CONFIG)"},
}
_LOCATION_OPTIONS: dict[str, dict[str, Any]] = {
    "--provider": {"help": "cloud provider: gcp, aws or azure (skip detection)"},
    "--region": {"help": "the provider's region, e.g. europe-west1"},
    "--country": {"help": "ISO country code when off-cloud, e.g. FR or FRA"},
    "--instance-type": {
        "help": "what the step runs on, e.g. m6i.large or n2-standard-8, for its embodied "
        "emissions (CARBONPIPE_INSTANCE_TYPE; default: the cloud's metadata server)"
    },
}
_BUDGET_OPTIONS: dict[str, dict[str, Any]] = {
    "--budget-scope": {"help": "budget scope, e.g. pipeline:train or team:ranking"},
    "--budget-kg": {"type": float, "help": "budget limit in kg CO2e for --budget-scope"},
    "--budget-period": {"default": "month", "choices": ["month", "quarter", "year", "total"]},
    "--on-exceed": {"default": "fail", "choices": ["fail", "skip"]},
    "--budget-estimate-kg": {
        "type": float,
        "help": "kg CO2e to reserve for a step with no baseline and no earlier run (required "
        "then for an on-exceed fail budget)",
    },
    "--budget-when-unavailable": {
        "choices": ["refuse", "run"],
        "help": "when the budget ledger cannot be read: refuse the step (default) or run it "
        "ungated, noted in its record",
    },
    "--budget-gate-timeout-s": {
        "type": float,
        "help": "seconds the budget gate may take to decide (default 5); then the ledger "
        "counts as unavailable",
    },
    "--budget-basis": {
        "choices": ["operational", "total"],
        "help": "what the budget counts: operational emissions (default) or operational + "
        "embodied (total_kg_co2e)",
    },
}
_RUN_OPTIONS: dict[str, dict[str, Any]] = {
    **_IDENTITY_OPTIONS,
    **_LOCATION_OPTIONS,
    "--step": {"default": None, "help": "step name (default: the command's name)"},
    "--attempt": {"type": int, "default": None, "help": "attempt number (retries)"},
    "--tracking-mode": {"choices": ["machine", "process", "offline"], "default": None},
    **_BUDGET_OPTIONS,
    **UNIT_OPTIONS,
    "--shift-within": {
        "metavar": "DURATION",
        "help": "start when the grid is cleanest within DURATION (90s, 15m, 6h) of now, by "
        "the forecast of CARBONPIPE_INTENSITY_SOURCE for CARBONPIPE_INTENSITY_ZONE",
    },
    "--expected-duration": {
        "metavar": "DURATION",
        "help": "how long the command runs, for --shift-within (default: its last run's)",
    },
    "--label": {"action": "append", "default": [], "metavar": "KEY=VALUE"},
    "--metrics-json": {"help": "also write the step's metrics as JSON to this file"},
    "--record-json": {
        "help": "also write the step's full record to this file: a copy that outlives the "
        "pod's spool (a KFP output artifact); `carbonpipe flush --from` delivers it once"
    },
    "--json": {"action": "store_true", "help": "print the metrics as JSON to stderr"},
}


def _add_options(p: argparse.ArgumentParser, options: Mapping[str, Mapping[str, Any]]) -> None:
    for flag, kwargs in options.items():
        p.add_argument(flag, **kwargs)
