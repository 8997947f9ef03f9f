"""Every error carbonpipe raises, in one place.

The hierarchy::

    CarbonpipeError
    ├── ConfigError (ValueError)          bad argument, env var or carbon.yaml field
    ├── InvalidRecord (ValueError)        a record that does not match carbonpipe.record/2
    ├── DetectionError                    cloud metadata answered something unusable
    ├── IntensityUnavailable              a grid-intensity source failed (timeout, 401, 429,
    │                                     5xx, malformed body): the step falls back to the table
    ├── StoreError
    │   ├── InvalidStoreURI (ValueError)  a store URI we cannot open
    │   ├── StoreUnavailable              unreachable, timed out, 5xx: the spool takes over
    │   │   └── StoreTimeout              no answer within store_timeout_s (or the store's
    │   │                                 breaker is open after one): the spool takes over
    │   ├── StorePermissionDenied         credentials refused (401/403)
    │   ├── ObjectNotFound (KeyError)     no object at that key
    │   ├── ObjectRejected                this object can never be written as it is (name too
    │   │   │                             long or invalid, a 400): the spool quarantines it
    │   │   └── KeyOutsideStore (ValueError) a key resolving outside a local store's root
    │   └── PreconditionFailed            a conditional write lost (object exists / changed)
    ├── BudgetError
    │   └── BudgetExceeded                a step that would overrun its budget was gated
    │       └── BudgetUnavailable         a strict budget's ledger could not be read in time
    ├── UnsafeFolder                      a spool or cache folder other users could write
    ├── CarbonRegression                  a step emitted well above its baseline (regression: fail)
    ├── MissingDependency (ImportError)   an optional package absent: names the extra to install
    └── InvalidCarbonTrace (ValueError)   a malformed ``x_carbon_trace``

Tracking failures (CodeCarbon, detection, the store) never reach the user's step: they are
logged and written into the record's ``tracking_errors``. Only ``BudgetExceeded`` stops a step,
and it does so before the step spends anything; ``BudgetUnavailable`` is one, so a budget whose
ledger is down refuses (``on_exceed="fail"``) or skips (``"skip"``) through the same handlers.
"""

from __future__ import annotations


class CarbonpipeError(Exception):
    """Base class of every carbonpipe error."""


class IntensityUnavailable(CarbonpipeError):
    """A grid-intensity source gave no usable answer in time; the caller falls back to the table.

    The message never holds a credential (tokens, passwords): sources redact before raising.
    """


class ConfigError(CarbonpipeError, ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


class InvalidRecord(CarbonpipeError, ValueError):
    """A record does not match the ``carbonpipe.record/2`` schema (or ``/1``, still read)."""


class DetectionError(CarbonpipeError):
    """A cloud metadata server answered, but not with a usable location."""


class StoreError(CarbonpipeError):
    """Base class of store failures."""


class InvalidStoreURI(StoreError, ValueError):
    """The store URI has a form we cannot open."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (network, timeout, 5xx)."""


class StoreTimeout(StoreUnavailable):
    """A store call got no complete answer within its deadline (``store_timeout_s``).

    Also raised, at once and without a request, for the rest of a tracked step after one call
    to the same store timed out (the store's breaker is open), so a hung store costs a step
    one deadline at most. A :class:`StoreUnavailable`: the spool takes the object.
    """


class StorePermissionDenied(StoreError):
    """The store refused our credentials."""


class ObjectNotFound(StoreError, KeyError):
    """No object exists at the key."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence.
        return str(self.args[0]) if self.args else "object not found"


class ObjectRejected(StoreError):
    """The store refuses this one object for good (its key or body), not the store as a whole.

    Raised for a key the local filesystem cannot hold (too long, invalid, unencodable) and for
    a 4xx from S3 or GCS that no retry can change (400, 411, 413, 414, ...). Retrying the same
    request cannot succeed, so the spool moves the object to its quarantine instead of
    retrying it before every other object.
    """


class KeyOutsideStore(ObjectRejected, ValueError):
    """A key that would resolve outside a local store's root (through a symlink, say).

    Refused before anything is written; the spool quarantines such an entry, never delivers it.
    """


class UnsafeFolder(CarbonpipeError):
    """A spool or cache folder not owned by this user, or writable by other users.

    carbonpipe refuses it as ssh refuses a loose ``~/.ssh``: anyone who can write there could
    plant entries a replay would deliver, or hardware profiles that skew every measurement.
    The message names the folder and the fix (``chmod 700 DIR``).
    """


class PreconditionFailed(StoreError):
    """A conditional write lost: the object already exists, or changed since it was read."""


class BudgetError(CarbonpipeError):
    """Base class of budget failures."""


class BudgetExceeded(BudgetError):
    """A step was gated because it would overrun its carbon budget.

    Attributes carry the figures so callers (KFP, Airflow) can report them.
    """

    def __init__(
        self,
        message: str,
        *,
        scope: str = "",
        used_kg: float = 0.0,
        reserved_kg: float = 0.0,
        limit_kg: float = 0.0,
        estimate_kg: float = 0.0,
        on_exceed: str = "fail",
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.used_kg = used_kg
        self.reserved_kg = reserved_kg
        self.limit_kg = limit_kg
        self.estimate_kg = estimate_kg
        self.on_exceed = on_exceed


class BudgetUnavailable(BudgetExceeded):
    """A budget's ledger could not be read, or the reservation written, before the gate's deadline.

    A subclass of :class:`BudgetExceeded` because it ends the same way: the step does not start
    (``on_exceed="fail"``: refused, ``carbonpipe run`` exits 3, Airflow fails the task, KFP fails
    it; ``"skip"``: skipped), so every handler of ``BudgetExceeded`` fails closed without change.
    Catch it first to tell an outage from an overrun. ``store_error`` names what the store said
    (redacted); the usage figures are unknown and stay 0. A budget with
    ``when_unavailable="run"`` lets the step run instead, and its record says so.
    """

    def __init__(
        self,
        message: str,
        *,
        scope: str = "",
        limit_kg: float = 0.0,
        estimate_kg: float = 0.0,
        on_exceed: str = "fail",
        store_error: str = "",
    ) -> None:
        super().__init__(
            message, scope=scope, limit_kg=limit_kg, estimate_kg=estimate_kg, on_exceed=on_exceed
        )
        self.store_error = store_error


class CarbonRegression(CarbonpipeError):
    """A step emitted more than its baseline allows and ``regression: fail`` is configured.

    Raised by the KFP and Airflow layers after the step finished and its record was written.
    """

    def __init__(self, message: str, *, alerts: tuple[dict[str, object], ...] = ()) -> None:
        super().__init__(message)
        self.alerts = alerts


class InvalidCarbonTrace(CarbonpipeError, ValueError):
    """An ``x_carbon_trace`` payload is malformed (wrong types, negative or non-finite values)."""


class MissingDependency(CarbonpipeError, ImportError):
    """A package that only an extra installs is missing: the message is the one line to act on.

    ``ESG reports need the esg extra: pip install 'carbonpipe[esg]'``. ``extra`` names the
    extra, ``module`` the module that could not be imported. Raised by
    :mod:`carbonpipe._optional`; the CLI prints the message and exits 2, without a traceback.
    """

    def __init__(self, message: str, *, extra: str = "", module: str = "") -> None:
        super().__init__(message)
        self.extra = extra
        self.module = module
        self.name = module or None  # ImportError's attribute: the module that was not found
