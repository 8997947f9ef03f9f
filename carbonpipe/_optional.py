"""Optional dependencies: a missing one is one line naming the extra to install, not a traceback.

Every import of a package that only an extra installs goes through here::

    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa

    storage = require("google.cloud.storage", extra="gcs", what="gs:// stores")

Without it, both raise :class:`~carbonpipe.errors.MissingDependency`, whose message is the one
line ``ESG reports need the esg extra: pip install 'carbonpipe[esg]'``; the CLI prints it and
exits 2, the KFP components print it and fail the task. An import that fails for another reason
(a broken binary wheel) is left as it is: reinstalling the extra would not fix it.
"""

from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager

from carbonpipe.errors import MissingDependency

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType, TracebackType


def missing_message(extra: str, what: str) -> str:
    """``WHAT need the EXTRA extra: pip install 'carbonpipe[EXTRA]'`` (``what`` is plural)."""
    return f"{what} need the {extra} extra: pip install 'carbonpipe[{extra}]'"


@contextmanager
def needs_extra(extra: str, what: str) -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` raised in the block into :class:`MissingDependency`."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise MissingDependency(
            missing_message(extra, what), extra=extra, module=exc.name or ""
        ) from exc


def require(module: str, *, extra: str, what: str) -> ModuleType:
    """Import and return ``module``; raise :class:`MissingDependency` naming ``extra`` if absent."""
    with needs_extra(extra, what):
        return importlib.import_module(module)


def one_line_when_missing() -> None:
    """Let an uncaught :class:`MissingDependency` end this process with its one line.

    For the processes carbonpipe's code is the program of, the KFP components' executors: their
    log shows ``carbonpipe: ESG reports need the esg extra: ...`` instead of a traceback, and the
    exit status stays 1. Any other uncaught exception goes to the hook that was there before.
    """
    previous = sys.excepthook
    if getattr(previous, "carbonpipe_one_line", False):
        return

    def hook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        if isinstance(value, MissingDependency):
            print(f"carbonpipe: {value}", file=sys.stderr)
        else:
            previous(kind, value, traceback)

    hook.carbonpipe_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook
