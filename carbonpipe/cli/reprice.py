"""``carbonpipe reprice``: revise table-priced records of a period with a time series.

See :mod:`carbonpipe.esg.revisions`: records stay as they are; one revision document per record
and source (create-if-absent, so a rerun writes nothing new), which the ESG report then uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``carbonpipe reprice`` to the ``carbonpipe`` parser."""
    p = subparsers.add_parser(
        "reprice",
        help="reprice a period's table-priced records with a time series (revision documents)",
    )
    p.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or carbon.yaml)")
    p.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    p.add_argument(
        "--period", required=True, help="2026, 2026-Q4, 2026-11 or 2026-11-01..2026-11-15"
    )
    p.add_argument(
        "--source",
        required=True,
        help="time-series source: file:PATH, electricitymaps, watttime, carbon-aware-sdk, uk",
    )
    p.add_argument(
        "--zone",
        help="grid zone (Electricity Maps names: BE, US-CAL-CISO); default: each record's "
        "cloud region's zone",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per source request")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(handler=cmd_reprice)


def cmd_reprice(args: argparse.Namespace) -> int:
    """Write the revisions; exit 0, or 1 when some eligible records could not be repriced."""
    from carbonpipe.config import resolve_settings
    from carbonpipe.errors import ConfigError
    from carbonpipe.esg.revisions import reprice

    store = resolve_settings(config_file=args.config, store=args.store).open_store()
    try:
        done = reprice(store, args.period, args.source, zone=args.zone, timeout_s=args.timeout)
    except ConfigError as exc:
        print(f"carbonpipe: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"store": store.uri, **done.to_dict()}, allow_nan=False))
    else:
        print(f"store:     {store.uri}")
        print(f"records:   {done.records} in the period, {done.eligible} priced with the table")
        print(f"revised:   {done.written} written, {done.already} already revised")
        for line in done.failures[:20]:
            print(f"not repriced: {line}")
    return 1 if done.failures else 0
