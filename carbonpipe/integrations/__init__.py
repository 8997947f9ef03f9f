"""Integrations with the tools ML teams already run: Optuna, and the KFP step runtime.

``optuna`` (carbon-aware hyperparameter search; also importable as ``carbonpipe.optuna``),
``kfp`` (what carbonpipe's Kubeflow components run inside their container, without importing
kfp). The KFP components and Airflow operators themselves live in ``carbonpipe.components`` and
``carbonpipe.operators`` and call into these.

May import: anything in carbonpipe; it is the top layer.
"""
