"""Ready-made pipelines: the budget-gated training and the nightly ESG report.

* ``gated_training_pipeline``  KFP: preprocess → budget gate → train → evaluate.
* ``nightly_esg_pipeline``     KFP: the nightly ESG aggregation.
* ``nightly_esg_dag``          Airflow: the same aggregation as a DAG.

Names resolve lazily: importing this package imports neither kfp nor airflow.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "gated_training_pipeline": "carbonpipe.pipelines.gated_training",
    "nightly_esg_pipeline": "carbonpipe.pipelines.nightly_esg",
    "nightly_esg_dag": "carbonpipe.pipelines.nightly_esg",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
