"""Airflow DAG file: a carbon-tracked training task gated by a monthly carbon budget.

Copy it into your DAGS_FOLDER. The store comes from ``CARBONPIPE_STORE`` or carbon.yaml.
"""

from carbonpipe.pipelines.airflow_dags import gated_training_dag

dag = gated_training_dag(limit_kg_co2e=1.0, on_exceed="skip")
