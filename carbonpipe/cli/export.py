"""The ``export`` subcommand: a store's records in another tool's format, on stdout.

``carbonpipe export --format codecarbon --store URI [--period P | --start D --end D]
[--pipeline NAME] > emissions.csv`` writes CodeCarbon's ``emissions.csv`` (see
:mod:`carbonpipe.export`); the row count goes to stderr. ``--format impact-framework`` writes
an Impact Framework manifest (YAML) whose builtin plugins recompute the SCI of the records
with functional units (see :mod:`carbonpipe.esg.impact_framework`).
"""

from __future__ import annotations

import sys
from datetime import date
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``export`` to the ``carbonpipe`` parser."""
    exp = subparsers.add_parser(
        "export",
        help="write a store's records as CodeCarbon's emissions.csv or an Impact Framework "
        "manifest to stdout",
    )
    exp.add_argument(
        "--format",
        dest="fmt",
        required=True,
        choices=["codecarbon", "impact-framework"],
        help="output format",
    )
    exp.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or carbon.yaml)")
    exp.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    exp.add_argument("--period", help="2026-11, 2026-Q4, 2026 or START_END (default: all)")
    exp.add_argument("--start", type=date.fromisoformat, help="first UTC date, YYYY-MM-DD")
    exp.add_argument("--end", type=date.fromisoformat, help="last UTC date, YYYY-MM-DD")
    exp.add_argument("--pipeline", help="only this pipeline's records")
    exp.set_defaults(handler=cmd_export)


def cmd_export(args: Any) -> int:
    """Write the records to stdout; exit 0 (2 for bad options or an unreadable store)."""
    from carbonpipe.config import resolve_settings
    from carbonpipe.export import export_records
    from carbonpipe.stores.redact import redact

    start, end = args.start, args.end
    if args.period is not None or (start is not None and end is not None):
        from carbonpipe.esg.period import parse_period

        period = parse_period(args.period, start=start, end=end)
        start, end = period.start, period.end
    store = resolve_settings(config_file=args.config, store=args.store).open_store()
    if args.fmt == "impact-framework":
        return _impact_framework(args, store, start, end)
    try:
        count = export_records(
            store, sys.stdout, fmt=args.fmt, start=start, end=end, pipeline=args.pipeline
        )
    finally:
        store.close()
    sys.stdout.flush()
    print(f"carbonpipe export: {count} record(s) from {redact(store.uri)}", file=sys.stderr)
    return 0


def _impact_framework(args: Any, store: Any, start: date | None, end: date | None) -> int:
    """Write the Impact Framework manifest of the records to stdout."""
    from carbonpipe.esg.impact_framework import write_manifest
    from carbonpipe.report import read_records, record_keys
    from carbonpipe.stores.redact import redact

    try:
        keys = record_keys(store, start=start, end=end, pipeline=args.pipeline)
        records = [
            r for r in read_records(store, keys) if not args.pipeline or r.pipeline == args.pipeline
        ]
        label = args.period or (f"{start}_{end}" if start and end else None)
        count = write_manifest(records, sys.stdout, pipeline=args.pipeline, period=label)
    finally:
        store.close()
    sys.stdout.flush()
    print(
        f"carbonpipe export: {count} record(s) with functional units from {redact(store.uri)}",
        file=sys.stderr,
    )
    return 0
