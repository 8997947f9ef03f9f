"""Airflow's environment for the whole suite, set before anything imports ``airflow``.

Airflow reads its configuration when it is first imported, so the root conftest imports this
module first: a throw-away AIRFLOW_HOME with a SQLite DB and a DAGS_FOLDER of its own.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if "airflow" in sys.modules:  # pragma: no cover - a guard for whoever reorders the suite
    raise RuntimeError("airflow was imported before tests/airflow_env.py set AIRFLOW_HOME")

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="carbonpipe-airflow-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
