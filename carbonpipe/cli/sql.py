"""``carbonpipe sql``: print the DDL and views an SQL engine runs to read a store.

See :mod:`carbonpipe.esg.sql` for what the script creates and how its sums stay exact.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``carbonpipe sql`` to the ``carbonpipe`` parser."""
    from carbonpipe.esg.sql import ENGINES

    p = subparsers.add_parser(
        "sql", help="print the DDL and views of carbon_records and carbon_daily for an SQL engine"
    )
    p.add_argument("--engine", required=True, choices=ENGINES)
    p.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or carbon.yaml)")
    p.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    p.add_argument(
        "--dataset", default="carbonpipe", help="BigQuery: the dataset of the tables (carbonpipe)"
    )
    p.add_argument("--out", help="write the script to this file instead of stdout")
    p.set_defaults(handler=cmd_sql)


def _bucket_root(uri: str, scheme: str, engine: str) -> str:
    """``scheme://bucket/prefix`` of a store URI, for an engine that reads only that scheme."""
    if not uri.startswith(f"{scheme}://"):
        raise ValueError(f"--engine {engine} reads {scheme}:// stores, not {uri!r}")
    return uri.split("?", 1)[0].rstrip("/")


def sources_of(engine: str, uri: str, dataset: str) -> tuple[Any, list[str]]:
    """The :class:`~carbonpipe.esg.sql.Sources` of the store ``uri``, and warnings to print.

    Athena and BigQuery get both layouts and the parts (their tables may be empty); DuckDB and
    Spark read files when a view is created, so the store is looked at and only what it holds
    is read.
    """
    from carbonpipe.esg.sql import Sources

    if engine == "athena":
        return Sources(_bucket_root(uri, "s3", engine)), []
    if engine == "bigquery":
        return Sources(_bucket_root(uri, "gs", engine), dataset=dataset), []
    from carbonpipe.esg.rows import COMPACT_PREFIX, SQL_TYPED_SCHEMAS, _schema_of
    from carbonpipe.record import LEGACY_RECORDS_PREFIX, RECORDS_PREFIX
    from carbonpipe.stores.local import LocalStore
    from carbonpipe.stores.opener import open_store

    store = open_store(uri)

    def holds(prefix: str) -> bool:
        return any(k.endswith(".json") for k in store.list(prefix))

    layouts = tuple(
        v for v, prefix in (("v2", RECORDS_PREFIX), ("v1", LEGACY_RECORDS_PREFIX)) if holds(prefix)
    )
    parts = [k for k in store.list(f"{COMPACT_PREFIX}/") if k.endswith("/part.parquet")]
    warnings = []
    if "v1" in layouts:
        warnings.append(
            "records/v1 holds records of an earlier layout: the views read them (each record "
            "once); `carbonpipe migrate` moves them to records/v2"
        )
    old = [k for k in parts if _schema_of(store.get(k).data) not in SQL_TYPED_SCHEMAS]
    if old:
        warnings.append(
            f"{len(old)} compacted part(s) predate {SQL_TYPED_SCHEMAS[-1]} (timestamps as text): run "
            "`carbonpipe migrate` first, or the views mistype or skip them"
        )
    root = str(store.root) if isinstance(store, LocalStore) else store.uri.rstrip("/")
    if engine == "spark" and root.startswith("s3://"):
        root = "s3a://" + root[len("s3://") :]  # Hadoop's S3 filesystem
    return Sources(root, json_layouts=layouts, compacted=bool(parts)), warnings


def cmd_sql(args: argparse.Namespace) -> int:
    """Print (or write) the script of ``--engine`` for the store."""
    from carbonpipe.config import resolve_settings
    from carbonpipe.esg.sql import script

    uri = resolve_settings(config_file=args.config, store=args.store).store
    src, warnings = sources_of(args.engine, uri, args.dataset)
    for w in warnings:
        print(f"carbonpipe sql: {w}", file=sys.stderr)
    text = script(args.engine, src, store=uri)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
