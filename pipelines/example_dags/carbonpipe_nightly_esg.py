"""Airflow DAG file: carbonpipe's nightly ESG report (copy it into your DAGS_FOLDER).

The store comes from ``CARBONPIPE_STORE`` or carbon.yaml when the task runs; pass ``store=``
to pin it here.
"""

from carbonpipe.pipelines.airflow_dags import nightly_esg_dag

dag = nightly_esg_dag()
