"""A record delivered and charged, the one way every path does it.

The tracker at a step's end, the sweep of the copies orchestrators keep
(:mod:`carbonpipe.sweep`) and the sweep of lost steps (:mod:`carbonpipe.lost_steps`) all write
a record create-if-absent under its own key (spooled if the store cannot take it) and charge it
to the budget ledger. A record that met different bytes under its key is kept aside by the
spool and not charged: the record already there was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass

from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from carbonpipe.stores.deliver import Delivery, deliver
from carbonpipe.stores.redact import redact

log = logging.getLogger("carbonpipe")


@dataclass(frozen=True)
class RecordDelivery:
    """What became of a record (``delivery``) and of its ledger charge (``charge_error``)."""

    delivery: Delivery
    charge_error: str | None = None

    @property
    def conflict(self) -> bool:
        """Different bytes were already under the record's key; ours are in the spool."""
        return self.delivery.error is not None and not self.delivery.spooled


def deliver_record(
    store: Store,
    record: Record,
    *,
    data: bytes | None = None,
    run_scope: bool = False,
    spool_dir: str | os.PathLike[str] | None = None,
    total_scopes: Collection[str] = (),
) -> RecordDelivery:
    """Write ``record`` (or its stored bytes, ``data``) and charge it; never raises for the store.

    Raises only what :func:`carbonpipe.stores.deliver.deliver` raises: the spool itself cannot be
    written.
    """
    from carbonpipe.budgets.charges import charge_record

    delivery = deliver(
        store, record.key, record.to_json() if data is None else data, spool_dir=spool_dir
    )
    if delivery.error is not None and not delivery.spooled:
        return RecordDelivery(delivery)
    try:
        charge_record(store, record, run_scope=run_scope, total_scopes=total_scopes)
    except Exception as exc:  # the record is safe; its charges went to the spool or failed here
        message = redact(f"{record.record_id}: budget ledger charge failed: {exc}")
        log.warning("carbonpipe: %s", message)
        return RecordDelivery(delivery, message)
    return RecordDelivery(delivery)
