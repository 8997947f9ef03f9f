"""The ``carbon`` OpenLineage run facet: a tracked task's record, on its COMPLETE and FAIL events.

``CarbonTrackedOperator`` and ``@task.carbon_tracked`` attach it themselves
(``get_openlineage_facets_on_complete`` / ``_on_failure``). Any other task whose record reached
XCom (``carbon_record``) gets it through the OpenLineage provider's ``custom_run_facets``::

    [openlineage]
    custom_run_facets = carbonpipe.operators.openlineage.carbon_run_facet

The facet's JSON Schema ships with the package (``carbonpipe/schemas/
openlineage_carbon_run_facet.v1.json``) and is what ``_schemaURL`` names. This module imports
the OpenLineage client at top level: only the methods that emit lineage import it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import attr
from openlineage.client.facet_v2 import RunFacet

from carbonpipe.operators.records import RECORD_XCOM_KEY

log = logging.getLogger(__name__)

#: The key of the facet in ``run.facets``.
FACET_NAME = "carbon"
SCHEMA_URL = (
    "https://github.com/carbonpipe/carbonpipe/blob/main/carbonpipe/schemas/"
    "openlineage_carbon_run_facet.v1.json#/$defs/CarbonRunFacet"
)


@attr.define
class CarbonRunFacet(RunFacet):
    """A step's carbon figures, from its carbonpipe record (see the schema for each field)."""

    record_id: str = attr.field()
    status: str = attr.field()
    energy_kwh: dict[str, float] = attr.field()
    emissions_kg_co2e: float = attr.field()
    intensity_g_per_kwh: float = attr.field()
    intensity_source: dict[str, Any] = attr.field()
    location: dict[str, Any] = attr.field()
    method: str = attr.field()
    store_uri: str | None = attr.field(default=None)
    record_key: str | None = attr.field(default=None)
    attempt: int | None = attr.field(default=None)
    duration_s: float | None = attr.field(default=None)
    pue: float | None = attr.field(default=None)
    embodied_kg_co2e: float | None = attr.field(default=None)
    total_kg_co2e: float | None = attr.field(default=None)
    scope: str | None = attr.field(default=None)
    tracking_errors: list[str] = attr.field(factory=list)
    _additional_skip_redact: ClassVar[list[str]] = [
        "record_id",
        "status",
        "energy_kwh",
        "emissions_kg_co2e",
        "intensity_g_per_kwh",
        "intensity_source",
        "location",
        "method",
        "record_key",
        "attempt",
        "duration_s",
        "pue",
        "embodied_kg_co2e",
        "total_kg_co2e",
        "scope",
    ]

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL

    @classmethod
    def from_record(cls, record: Mapping[str, Any], store_uri: str | None = None) -> CarbonRunFacet:
        """The facet of a record's mapping (``Record.to_dict()``, the ``carbon_record`` XCom)."""
        from carbonpipe.record import Record

        rec = Record.from_dict(record)
        measurement = rec.measurement or {}
        return cls(
            record_id=rec.record_id,
            status=rec.status,
            energy_kwh=dict(rec.energy_kwh),
            emissions_kg_co2e=rec.emissions_kg_co2e,
            intensity_g_per_kwh=rec.intensity_g_per_kwh,
            intensity_source=dict(rec.intensity_source or {}),
            location=dict(rec.location or {}),
            method=str(measurement.get("method")),
            store_uri=_redacted(store_uri),
            record_key=rec.key,
            attempt=rec.attempt,
            duration_s=rec.duration_s,
            pue=rec.pue,
            embodied_kg_co2e=rec.embodied_kg_co2e,
            total_kg_co2e=rec.total_kg_co2e,
            scope=measurement.get("scope"),
            tracking_errors=list(rec.tracking_errors),
        )


def _redacted(uri: str | None) -> str | None:
    """The store URI without secrets (a SAS token, a key in the query)."""
    if uri is None:
        return None
    from carbonpipe.stores.redact import redact

    return str(redact(uri))


def operator_lineage(record: Mapping[str, Any] | None, store_uri: str | None = None) -> Any:
    """An ``OperatorLineage`` carrying the ``carbon`` facet of ``record`` (none without one)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    if record is None:
        return OperatorLineage()
    return OperatorLineage(run_facets={FACET_NAME: CarbonRunFacet.from_record(record, store_uri)})


def record_of(task_instance: Any) -> dict[str, Any] | None:
    """The task instance's record, from the ``carbon_record`` XCom it pushed (None without one)."""
    map_index = getattr(task_instance, "map_index", None)
    kwargs: dict[str, Any] = {"task_ids": task_instance.task_id, "key": RECORD_XCOM_KEY}
    if map_index is not None and map_index >= 0:
        kwargs["map_indexes"] = map_index
    value = task_instance.xcom_pull(**kwargs)
    if isinstance(value, list):  # pulled across map indexes
        value = value[0] if value else None
    if isinstance(value, (str, bytes)):
        import json

        value = json.loads(value)
    return dict(value) if isinstance(value, Mapping) else None


def carbon_run_facet(task_instance: Any, ti_state: Any) -> dict[str, RunFacet]:
    """``[openlineage] custom_run_facets`` entry: ``{"carbon": facet}`` of the task's record.

    Finds the record in the ``carbon_record`` XCom the task pushed; a task with none (not
    tracked, or its record not yet written) gets no facet. Never raises.
    """
    if str(getattr(ti_state, "value", ti_state)).lower() == "running":
        return {}  # the START event: no record yet
    try:
        task = getattr(task_instance, "task", None)
        record = getattr(task, "_carbon_record", None) or record_of(task_instance)
        if record is None:
            return {}
        store_uri = getattr(task, "_carbon_store_uri", None)
        return {FACET_NAME: CarbonRunFacet.from_record(record, store_uri)}
    except Exception as exc:  # lineage must never change a task's outcome
        log.warning("carbonpipe: no carbon facet for %s: %s", task_instance, exc)
        return {}
