"""The ``esg``, ``baseline create|show`` and ``plot`` subcommands of ``carbonpipe``.

``carbonpipe.cli.app`` calls :func:`register`; each parser sets ``handler``, which ``cli.main`` runs
and whose return value is the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, TextIO


def register(subparsers: Any) -> None:
    """Add the ESG, baseline and plot commands to the ``carbonpipe`` parser."""
    esg = subparsers.add_parser("esg", help="aggregate a period and write the ESG report")
    esg.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or carbon.yaml)")
    esg.add_argument("--period", help="2026-11, 2026-Q4 or 2026 (or give --start and --end)")
    esg.add_argument("--start", type=date.fromisoformat, help="first UTC date, YYYY-MM-DD")
    esg.add_argument("--end", type=date.fromisoformat, help="last UTC date, YYYY-MM-DD")
    esg.add_argument("--out", help="also write the artifacts into this folder")
    esg.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    esg.add_argument("--no-compact", action="store_true", help="do not compact closed days first")
    esg.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    esg.add_argument("--json", action="store_true", help="print headline figures and URIs as JSON")
    esg.set_defaults(handler=cmd_esg)

    base = subparsers.add_parser("baseline", help="carbon baselines of pipeline steps")
    bsub = base.add_subparsers(dest="baseline_command", required=True)
    create = bsub.add_parser("create", help="baseline a step from its last N succeeded attempts")
    show = bsub.add_parser("show", help="print a step's stored baseline")
    for p in (create, show):
        p.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or carbon.yaml)")
        p.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
        p.add_argument("--pipeline", required=True)
        p.add_argument("--step", required=True)
        p.add_argument("--json", action="store_true")
    create.add_argument("--runs", type=int, default=5, help="how many recent attempts (default 5)")
    create.add_argument("--lookback-days", type=int, default=90, help="how far back to look (90)")
    create.add_argument("--include-failed", action="store_true", help="count failed attempts too")
    create.set_defaults(handler=cmd_baseline_create)
    show.set_defaults(handler=cmd_baseline_show)

    plot = subparsers.add_parser("plot", help="a pipeline's daily emissions trend as PNG")
    plot.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or carbon.yaml)")
    plot.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    plot.add_argument("--pipeline", required=True)
    plot.add_argument("--days", type=int, default=30, help="how many days up to --end (30)")
    plot.add_argument("--end", type=date.fromisoformat, help="last UTC date (default: today)")
    plot.add_argument("--out", help="PNG file (default: carbon-trend-<pipeline>.png)")
    plot.set_defaults(handler=cmd_plot)


def _store(args: argparse.Namespace) -> Any:
    from carbonpipe.config import resolve_settings

    # Every call bounded by the user's store_timeout_s (argument, env or carbon.yaml).
    return resolve_settings(config_file=args.config, store=args.store).open_store()


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, done: int, total: int, records: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{total} days, {records:,} records, "
            f"{now - self.started:.1f} s"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def cmd_esg(args: argparse.Namespace) -> int:
    """Compact closed days, aggregate the period, write the report; print the headline."""
    from carbonpipe.esg.aggregation import aggregate
    from carbonpipe.esg.compaction import compact
    from carbonpipe.esg.config import load_esg_config
    from carbonpipe.esg.nightly import _write, headline
    from carbonpipe.esg.period import parse_period

    period = parse_period(args.period, start=args.start, end=args.end)
    config = load_esg_config(args.config)
    store = _store(args)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    if not args.no_compact:
        compact(store, period)
    agg = aggregate(
        store, period, progress=ProgressBar(f"reading {period.label}") if show else None
    )
    uris, report = _write(store, agg, args.out, config)
    data = {"totals": headline(report), "artifacts": uris}
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, allow_nan=False))
        return 0
    from carbonpipe.units import format_energy, format_mass

    s = report["executive_summary"]
    lines = [
        f"ESG report {period.label} ({period.start} to {period.end}), store {store.uri}",
        f"  emissions:  {format_mass(s['total_emissions_kg_co2e'])} CO2e (location-based)",
        f"  energy:     {format_energy(s['total_energy_kwh'])}",
        f"  attempts:   {report['activity']['step_attempts']:,} in {report['activity']['runs']:,} runs",
        f"  estimated:  {100 * s['estimated_energy_share']:.1f}% of energy",
        f"  regressions: {s['regressions']}",
    ]
    lines += [f"  {name}: {uri}" for name, uri in sorted(uris.items())]
    print("\n".join(lines))
    return 0


def cmd_baseline_create(args: argparse.Namespace) -> int:
    """Build and store a step's baseline from its last attempts."""
    from carbonpipe.baseline import baseline_key, create_baseline

    store = _store(args)
    base = create_baseline(
        store,
        args.pipeline,
        args.step,
        runs=args.runs,
        lookback_days=args.lookback_days,
        include_failed=args.include_failed,
    )
    return _print_baseline(
        args, base.to_dict(), f"{store.url_for(baseline_key(args.pipeline, args.step))}"
    )


def cmd_baseline_show(args: argparse.Namespace) -> int:
    """Print a step's stored baseline (exit 1 when there is none)."""
    from carbonpipe.baseline import baseline_key, load_baseline

    store = _store(args)
    base = load_baseline(store, args.pipeline, args.step)
    if base is None:
        print(f"no baseline for {args.pipeline}/{args.step} in {store.uri}", file=sys.stderr)
        return 1
    return _print_baseline(
        args, base.to_dict(), store.url_for(baseline_key(args.pipeline, args.step))
    )


def _print_baseline(args: argparse.Namespace, doc: dict[str, Any], where: str) -> int:
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))
        return 0
    samples = ", ".join(f"{s * 1000:.4g}" for s in doc["samples_kg_co2e"])
    print(
        f"{doc['pipeline']}/{doc['step']}: mean {doc['mean_kg_co2e'] * 1000:.4g} g CO2e, "
        f"std {doc['std_kg_co2e'] * 1000:.4g} g over {doc['runs']} runs "
        f"({doc['first_ended_at']} to {doc['last_ended_at']})\n  samples (g): {samples}\n  {where}"
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a pipeline's daily emissions over the last ``--days`` days into a PNG."""
    from carbonpipe.esg.aggregation import aggregate
    from carbonpipe.esg.charts import mass, pipeline_trend
    from carbonpipe.esg.period import parse_period

    if args.days < 1:
        raise ValueError(f"--days must be >= 1, got {args.days}")
    end = args.end or datetime.now(timezone.utc).date()
    period = parse_period(None, start=end - timedelta(days=args.days - 1), end=end)
    agg = aggregate(_store(args), period, pipeline=args.pipeline)
    out = args.out or f"carbon-trend-{args.pipeline}.png"
    with open(out, "wb") as fh:
        fh.write(pipeline_trend(agg, args.pipeline))
    total = agg.totals()
    print(
        f"{out}: {args.pipeline}, {total.records} attempts, {mass(total.emissions_kg_co2e)} over {args.days} days"
    )
    return 0
