"""``carbonpipe migrate``: move a store an earlier version wrote to the current layout.

See :mod:`carbonpipe.esg.migrate`: records/v1 to records/v2, compacted parts older than
compact/3 to the current schema; idempotent, and every reader counts each record once while it runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``carbonpipe migrate`` to the ``carbonpipe`` parser."""
    p = subparsers.add_parser(
        "migrate", help="move records/v1 to records/v2 and old compacted parts to the new types"
    )
    p.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or carbon.yaml)")
    p.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    p.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Migrate the store; exit 0 (1 if records had to stay in records/v1)."""
    from carbonpipe.config import resolve_settings
    from carbonpipe.esg.migrate import migrate

    store = resolve_settings(config_file=args.config, store=args.store).open_store()
    done = migrate(store, dry_run=args.dry_run)
    if args.json:
        print(
            json.dumps(
                {"store": store.uri, "dry_run": args.dry_run, **done.to_dict()}, allow_nan=False
            )
        )
    else:
        verb = "would move" if args.dry_run else "moved"
        print(f"store:    {store.uri}")
        print(
            f"records:  {verb} {done.records_moved} from records/v1 to records/v2"
            f" ({done.records_already_moved} were already there)"
        )
        print(
            f"parts:    {done.parts_rewritten} rewritten, {done.parts_current} already current"
            f" ({done.rows_backfilled} rows rebuilt from their records, {done.rows_kept} kept"
            " as they were: their records are gone)"
        )
        for line in done.records_left:
            print(f"left:     {line}")
        for key in done.parts_unreadable:
            print(f"unreadable part: {key}")
    return 1 if done.records_left else 0
