"""Where records, ledger entries, baselines and reports live: one interface, four backends.

``base`` (the :class:`Store` interface and its per-method contracts), ``local``, ``s3``, ``gcs``,
``azure`` (the backends), ``memory`` (an in-memory store for tests of other packages), ``uri`` (parse a
store URI with no import), ``opener`` (:func:`open_store`, a scheme table), ``spool`` (what a
store could not take waits on disk for replay), ``quarantine`` (what a store will never take,
kept with the reason), ``background`` (replay off the step's path), ``redact`` (secrets out of
errors and envelopes), ``deadline`` (every object-store call ends within ``store_timeout_s``),
``breaker`` (after one timeout a step stops waiting on that store), ``open_steps`` (a running
step's entry beside the spool, so a killed step still gets its record).

May import: ``errors`` and the standard library; boto3, google-cloud-storage and
azure-storage-blob only inside the backend that needs them.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "AzureBlobStore": "carbonpipe.stores.azure",
    "Store": "carbonpipe.stores.base",
    "StoredObject": "carbonpipe.stores.base",
    "BreakerStore": "carbonpipe.stores.breaker",
    "check_key": "carbonpipe.stores.base",
    "GCSStore": "carbonpipe.stores.gcs",
    "LocalStore": "carbonpipe.stores.local",
    "MemoryStore": "carbonpipe.stores.memory",
    "open_store": "carbonpipe.stores.opener",
    "redact": "carbonpipe.stores.redact",
    "S3Store": "carbonpipe.stores.s3",
    "deliver": "carbonpipe.stores.deliver",
    "pending": "carbonpipe.stores.spool",
    "quarantined": "carbonpipe.stores.spool",
    "replay": "carbonpipe.stores.spool",
    "DEFAULT_STORE": "carbonpipe.stores.uri",
    "parse_store_uri": "carbonpipe.stores.uri",
}

__all__ = [
    "AzureBlobStore",
    "BreakerStore",
    "DEFAULT_STORE",
    "GCSStore",
    "LocalStore",
    "MemoryStore",
    "S3Store",
    "Store",
    "StoredObject",
    "check_key",
    "deliver",
    "open_store",
    "parse_store_uri",
    "pending",
    "quarantined",
    "redact",
    "replay",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.stores.azure import AzureBlobStore
    from carbonpipe.stores.base import Store, StoredObject, check_key
    from carbonpipe.stores.breaker import BreakerStore
    from carbonpipe.stores.deliver import deliver
    from carbonpipe.stores.gcs import GCSStore
    from carbonpipe.stores.local import LocalStore
    from carbonpipe.stores.memory import MemoryStore
    from carbonpipe.stores.opener import open_store
    from carbonpipe.stores.redact import redact
    from carbonpipe.stores.s3 import S3Store
    from carbonpipe.stores.spool import pending, quarantined, replay
    from carbonpipe.stores.uri import DEFAULT_STORE, parse_store_uri
