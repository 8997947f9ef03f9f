"""SCI's functional unit for ``carbonpipe run``: ``--units N --unit NAME`` and the units file.

The wrapper creates an empty file and names it in ``$CARBONPIPE_UNITS_FILE`` for the command;
the command may write ``N NAME`` (``1000 inference``), ``N`` alone (with ``--unit NAME``) or
JSON ``{"count": N, "name": NAME}`` into it. After the command exits the wrapper reads it: what
the command wrote takes the place of ``--units``/``--unit``; an unreadable or invalid file is
a note in the record's ``tracking_errors`` and the options' units stand.
"""

from __future__ import annotations

import contextlib
import os

from carbonpipe._private import private_temp_file
from carbonpipe.errors import ConfigError
from carbonpipe.functional_unit import UNITS_FILE_ENV, check_name, parse_units_text, units

TYPE_CHECKING = False  # not typing's: `carbonpipe run` starts the command before importing it
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from carbonpipe.step import _Step

UNIT_OPTIONS: dict[str, dict[str, Any]] = {
    "--units": {
        "type": float,
        "metavar": "N",
        "help": "units of work the command does, SCI's R (with --unit); the command may also "
        "write 'N NAME' to $CARBONPIPE_UNITS_FILE",
    },
    "--unit": {
        "metavar": "NAME",
        "help": "the functional unit's name: 'training run', 'batch job', inference, token "
        "(alone: one unit)",
    },
}


def option_units(args: argparse.Namespace) -> dict[str, Any] | None:
    """``{name, count}`` from ``--units``/``--unit``, or None; ConfigError naming the option."""
    count, name = getattr(args, "units", None), getattr(args, "unit", None)
    if count is None and name is None:
        return None
    if name is None:
        raise ConfigError("--units needs --unit NAME (e.g. --units 1000 --unit inference)")
    return units(1.0 if count is None else count, name, count_field="--units", name_field="--unit")


def open_units_file() -> str | None:
    """Create the command's empty units file and name it in ``$CARBONPIPE_UNITS_FILE``."""
    env = os.environ
    folder = env.get("TMPDIR") or env.get("TEMP") or env.get("TMP") or "/tmp"
    try:  # not tempfile: it loads random, shutil and more before the command may start
        fd, path = private_temp_file(folder, "carbonpipe-units-", ".txt")
    except OSError:
        return None
    os.close(fd)
    os.environ[UNITS_FILE_ENV] = path
    return path


def apply_units(args: argparse.Namespace, handle: _Step | None, path: str | None) -> None:
    """Set the step's units: the file's if the command wrote one, else the options'."""
    try:
        declared = option_units(args)
        written = None
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read(4096)
                default = None if args.unit is None else check_name(args.unit, field="--unit")
                try:
                    written = parse_units_text(text, default_name=default)
                except ConfigError as exc:
                    if handle is not None:
                        handle.errors.append(f"units file ignored: {exc}")
        if handle is not None:
            handle.units = written or declared
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
