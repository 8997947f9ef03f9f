"""Records that only an orchestrator kept, swept into the store exactly once.

An ephemeral pod's spool dies with the pod: in KFP and in Airflow on Kubernetes every step is
such a pod. So each tracked step also leaves its full record where the orchestrator persists
it: the ``carbon_record`` output artifact in KFP's pipeline root, the ``carbon_record`` XCom in
Airflow. :func:`sweep` reads those copies back and delivers each one create-if-absent under its
own key, and charges it to the ledger the same way: a record the step delivered itself comes
back as a duplicate (same id, same bytes), never as a second record.

A source is a store URI (a folder, ``s3://``, ``gs://``: a KFP pipeline root), read through
:func:`carbonpipe.stores.opener.open_store`, or a scheme that a plugin registers in the
``carbonpipe.record_sources`` entry point group (the Airflow provider registers ``airflow:``,
XCom read from Airflow's metadata database), so the core never imports an orchestrator.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

from carbonpipe.errors import ConfigError, InvalidRecord
from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from carbonpipe.stores.redact import redact

log = logging.getLogger("carbonpipe")

#: The name of the record's copy: a KFP output artifact, an Airflow XCom key.
RECORD_ARTIFACT = "carbon_record"
#: The entry point group where orchestrator plugins register their record sources.
SOURCES_GROUP = "carbonpipe.record_sources"
# A record is a few kilobytes; anything far larger under that name is not one of ours.
_MAX_RECORD_BYTES = 1 << 20


class RecordSource(Protocol):
    """Where copies of records wait: yields (where it was found, the record's JSON bytes)."""

    def records(self) -> Iterator[tuple[str, bytes]]:
        """Yield every record copy the source holds."""
        ...


@dataclass
class SweepReport:
    """What one sweep found and did with it."""

    source: str
    found: int = 0
    delivered: int = 0
    duplicates: int = 0
    spooled: int = 0
    conflicts: int = 0
    invalid: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class StoreRecords:
    """Record copies under a folder or bucket: every object named ``carbon_record``."""

    def __init__(self, store: Store, *, name: str = RECORD_ARTIFACT) -> None:
        self.store = store
        self.name = name

    def records(self) -> Iterator[tuple[str, bytes]]:
        for key in self.store.list(""):
            if key.rsplit("/", 1)[-1] != self.name:
                continue
            obj = self.store.get(key)
            yield self.store.url_for(key), obj.data


def open_source(uri: str) -> RecordSource:
    """The record source ``uri`` names: a registered scheme (``airflow:``), else a store URI."""
    scheme, sep, _ = uri.partition(":")
    if sep and not uri.startswith(f"{scheme}://") and scheme not in ("", "file"):
        plugin = _plugin(scheme)
        if plugin is not None:
            return plugin(uri)
        if len(scheme) > 1:  # "C:" is a drive; anything longer is a scheme nobody registered
            raise ConfigError(
                f"--from {uri!r}: no record source is registered for {scheme!r}: use a folder, "
                "s3://bucket/prefix, gs://bucket/prefix (a KFP pipeline root) or airflow: "
                "(needs carbonpipe[airflow] and Airflow's database configuration)"
            )
    from carbonpipe.stores.opener import open_store

    return StoreRecords(open_store(uri))


def _plugin(scheme: str) -> Callable[[str], RecordSource] | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=SOURCES_GROUP):
        if ep.name == scheme:
            loaded: Callable[[str], RecordSource] = ep.load()
            return loaded
    return None


def sweep(
    source: RecordSource | str,
    store: Store,
    *,
    spool_dir: str | os.PathLike[str] | None = None,
) -> SweepReport:
    """Deliver every record copy ``source`` holds to ``store`` and charge it; exactly once.

    A copy that is not a valid record is reported (``invalid``), never delivered. A store that
    is down gets the record through the spool, as a step's own delivery would.
    """
    from carbonpipe.delivery import deliver_record

    name = source if isinstance(source, str) else type(source).__name__
    src = open_source(source) if isinstance(source, str) else source
    report = SweepReport(source=redact(name))
    for where, raw in src.records():
        report.found += 1
        try:
            if len(raw) > _MAX_RECORD_BYTES:
                raise InvalidRecord(f"{len(raw)} bytes is too large for a record")
            record = Record.from_json(raw)
        except InvalidRecord as exc:
            report.invalid.append(redact(f"{where}: {exc}"))
            continue
        # charged: pipeline, team
        done = deliver_record(store, record, data=_as_written(raw, record), spool_dir=spool_dir)
        delivery = done.delivery
        if done.conflict:
            report.conflicts += 1
            report.invalid.append(redact(f"{where}: {delivery.error}"))
        elif delivery.spooled:
            report.spooled += 1
        elif delivery.duplicate:
            report.duplicates += 1
        else:
            report.delivered += 1
    if report.found:
        log.info(
            "carbonpipe: swept %s: %d found, %d delivered, %d already there, %d spooled",
            report.source,
            report.found,
            report.delivered,
            report.duplicates,
            report.spooled,
        )
    return report


def _as_written(raw: bytes, record: Record) -> bytes:
    """The bytes to store for a swept copy: its own when they are a record as some version
    wrote it (sorted, compact JSON), so a copy an earlier version wrote stays the same bytes as
    the record that version delivered (no conflict); else the record's current serialisation.
    """
    try:
        canonical = json.dumps(
            json.loads(raw), sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode()
    except ValueError:
        return record.to_json()
    return raw if canonical == raw else record.to_json()
