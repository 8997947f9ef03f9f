"""``airflow:``: the ``carbon_record`` XComs of tracked tasks, as a source for ``carbonpipe flush``.

Every tracked task pushes its full record to XCom beside ``carbon_metrics``; Airflow keeps XCom
in its metadata database, which outlives the worker pod and its spool. This source reads those
copies back (``airflow:`` for every DAG, ``airflow:DAG_ID`` for one), so
``carbonpipe flush --from airflow:`` delivers the records a down store never got, exactly once.
It needs Airflow's database configuration, as the ``airflow`` CLI does: run it where the
scheduler or the API server runs (Airflow 3 gives tasks no database access).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from carbonpipe._optional import needs_extra

#: The XCom key of a tracked task's full record (pushed by ``CarbonTrackedOperator``).
RECORD_XCOM_KEY = "carbon_record"


class XComRecords:
    """The record copies in Airflow's XCom table, newest runs last."""

    def __init__(self, uri: str = "airflow:") -> None:
        scheme, _, dag_id = uri.partition(":")
        if scheme != "airflow":
            raise ValueError(
                f"an XCom record source is named airflow: or airflow:DAG_ID, got {uri!r}"
            )
        self.dag_id = dag_id.strip("/") or None

    def records(self) -> Iterator[tuple[str, bytes]]:
        # Airflow sets logging up on import, with handlers that may print to stdout: keep the
        # command's own logging (stderr) and its stdout for its output (``flush --json``).
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        with (
            contextlib.redirect_stdout(sys.stderr),
            needs_extra("airflow", "airflow: record sources"),
        ):
            from airflow.models.xcom import XComModel
            from airflow.utils.session import create_session
        root.handlers[:] = handlers
        root.setLevel(level)
        from sqlalchemy import select

        query = select(XComModel).where(XComModel.key == RECORD_XCOM_KEY)
        if self.dag_id is not None:
            query = query.where(XComModel.dag_id == self.dag_id)
        query = query.order_by(XComModel.timestamp)
        with create_session() as session:
            for row in session.scalars(query):
                where = f"airflow:{row.dag_id}/{row.run_id}/{row.task_id}"
                if row.map_index is not None and row.map_index >= 0:
                    where += f"[{row.map_index}]"
                yield where, _as_bytes(XComModel.deserialize_value(row))


def _as_bytes(value: Any) -> bytes:
    """The record's JSON, however the XCom backend handed it back (a string, or decoded)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
