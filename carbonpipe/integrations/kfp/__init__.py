"""What carbonpipe's Kubeflow components run inside their container, without importing kfp.

The components in :mod:`carbonpipe.components` are interfaces only (a signature and a docstring
KFP reads into the spec); each body is one call into a module here, mirroring them:

* ``tracked``  :func:`run_tracked_step`, the body of a ``@carbon_component``;
* ``gate``     :func:`run_budget_gate`, the ``budget_gate`` component;
* ``esg``      :func:`run_esg_aggregate`, the ``esg_aggregate`` component;
* ``command``  ``python -m carbonpipe.integrations.kfp.command``, the ``tracked_command``
  container component's entry point (``carbonpipe run`` plus KFP's metrics file);
* ``context``  the step's identity from KFP's placeholders, its settings, artifact helpers.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "run_command": "carbonpipe.integrations.kfp.command",
    "CONFIG_KEYS": "carbonpipe.integrations.kfp.context",
    "IDENTITY_INPUTS": "carbonpipe.integrations.kfp.context",
    "KfpContext": "carbonpipe.integrations.kfp.context",
    "METRICS_OUTPUT": "carbonpipe.integrations.kfp.context",
    "StepSkipped": "carbonpipe.integrations.kfp.context",
    "budget_to_dict": "carbonpipe.integrations.kfp.context",
    "publish_metrics": "carbonpipe.integrations.kfp.context",
    "step_config": "carbonpipe.integrations.kfp.context",
    "nightly_period": "carbonpipe.integrations.kfp.esg",
    "run_esg_aggregate": "carbonpipe.integrations.kfp.esg",
    "GateOutcome": "carbonpipe.integrations.kfp.gate",
    "run_budget_gate": "carbonpipe.integrations.kfp.gate",
    "make_tracker": "carbonpipe.integrations.kfp.tracked",
    "resolve_attempt": "carbonpipe.integrations.kfp.tracked",
    "run_tracked_step": "carbonpipe.integrations.kfp.tracked",
    "step_metrics": "carbonpipe.integrations.kfp.tracked",
}

__all__ = [
    "CONFIG_KEYS",
    "GateOutcome",
    "IDENTITY_INPUTS",
    "KfpContext",
    "METRICS_OUTPUT",
    "StepSkipped",
    "budget_to_dict",
    "make_tracker",
    "nightly_period",
    "publish_metrics",
    "resolve_attempt",
    "run_budget_gate",
    "run_command",
    "run_esg_aggregate",
    "run_tracked_step",
    "step_config",
    "step_metrics",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.integrations.kfp.command import run_command
    from carbonpipe.integrations.kfp.context import (
        CONFIG_KEYS,
        IDENTITY_INPUTS,
        METRICS_OUTPUT,
        KfpContext,
        StepSkipped,
        budget_to_dict,
        publish_metrics,
        step_config,
    )
    from carbonpipe.integrations.kfp.esg import nightly_period, run_esg_aggregate
    from carbonpipe.integrations.kfp.gate import GateOutcome, run_budget_gate
    from carbonpipe.integrations.kfp.tracked import (
        make_tracker,
        resolve_attempt,
        run_tracked_step,
        step_metrics,
    )
