"""The inspection and maintenance commands: ``detect``, ``report``, ``budget``, ``flush``, ``config``.

Each takes the parsed arguments and returns the exit code; ``--json`` prints the data instead
of the text (:func:`carbonpipe.cli.console.emit`).
"""

from __future__ import annotations

from carbonpipe.cli.console import emit
from carbonpipe.errors import CarbonpipeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

    from carbonpipe.budgets.budget import Budget
    from carbonpipe.budgets.definitions import SourcedBudget
    from carbonpipe.lost_steps import LostReport
    from carbonpipe.stores.base import Store
    from carbonpipe.stores.spool import ReplayReport
    from carbonpipe.sweep import SweepReport


# -- detect / report / budget / flush / config ----------------------------------------------
# ``detect``: the time kept back from the probes for what follows them (closing the sockets,
# the intensity lookup, the output) on a loaded machine, and the least the probes get.
_DETECT_AFTER_S = 0.010
_DETECT_MIN_S = 0.01


def cmd_detect(args: argparse.Namespace) -> int:
    """Print the detected location and its intensity.

    The call, ``elapsed_ms`` (settings, detection, the intensity lookup; the modules are
    loaded before it starts), keeps to detection's 60 ms: the intensity table is read first,
    and the probes get what is left of the 60 ms, less a reserve for what follows them (the
    wake-up after the deadline is late by milliseconds on a loaded machine).
    """
    import time

    from carbonpipe.config import resolve_settings
    from carbonpipe.intensity.table import lookup_intensity
    from carbonpipe.location import detect, imds  # noqa: F401  (loaded like the rest)
    from carbonpipe.location.providers import DEFAULT_DEADLINE_S

    t0 = time.perf_counter()
    settings = resolve_settings()
    lookup_intensity(None, None, None)  # loads the table: the answer costs nothing after the probes
    left = DEFAULT_DEADLINE_S - _DETECT_AFTER_S - (time.perf_counter() - t0)
    loc = settings.locate(
        provider=args.provider,
        region=args.region,
        country_iso=args.country,
        deadline_s=max(left, _DETECT_MIN_S),
    )
    intensity = lookup_intensity(loc.provider, loc.region, loc.country_iso)
    data: dict[str, Any] = {
        "provider": loc.provider,
        "region": loc.region,
        "country_iso": loc.country_iso,
        "intensity_g_per_kwh": intensity.intensity_g_per_kwh,
        "detected_by": loc.detected_by,
        "intensity_source": intensity.to_source_dict(),
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2),
        "instance_type": loc.instance_type,
        "instance_type_by": loc.instance_type_by,
    }
    data["pue"], data["pue_source"] = settings.pue_for(loc.provider, loc.region)
    if loc.notes:
        data["notes"] = list(loc.notes)
    src = intensity.to_source_dict()
    text = "\n".join(
        [
            f"provider:   {loc.provider or '-'}   ({loc.detected_by})",
            f"region:     {loc.region or '-'}",
            f"country:    {loc.country_iso or '-'}",
            f"intensity:  {intensity.intensity_g_per_kwh:g} g CO2e/kWh "
            f"({src['kind']}: {src['name']}, {src['vintage']})",
            f"instance:   {loc.instance_type or '-'}   ({loc.instance_type_by or 'unknown'})",
            f"pue:        {data['pue']:g}   ({data['pue_source']['kind']})",
            f"elapsed:    {data['elapsed_ms']} ms",
        ]
        + [f"note:       {n}" for n in loc.notes]
    )
    emit(args, data, text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the summary of the records in a store."""
    from carbonpipe.config import resolve_settings
    from carbonpipe.impact import format_energy, format_mass
    from carbonpipe.report import summarize

    store = resolve_settings(store=args.store).open_store()
    summary = summarize(store, start=args.start, end=args.end, pipeline=args.pipeline)
    data = {"store": store.uri, **summary.to_dict()}
    lines = [
        f"store:      {store.uri}",
        f"records:    {summary.records} ({summary.failed} not succeeded)",
        f"energy:     {format_energy(summary.energy_kwh)}",
        f"emissions:  {format_mass(summary.emissions_kg_co2e)} CO2e",
        f"embodied:   {format_mass(data['embodied_kg_co2e'])} CO2e "
        f"(operational + embodied: {format_mass(data['total_kg_co2e'])})",
    ]
    if summary.on_premises_pue:
        lines.append(
            f"note:       {summary.on_premises_pue} records ran off the cloud with no configured "
            "pue: PUE 1.0, no data-centre overhead counted (set pue to count it)"
        )
    for name, p in sorted(summary.by_pipeline.items()):
        lines.append(
            f"  {name}: {int(p['records'])} records, {format_energy(p['energy_kwh'])}, "
            f"{format_mass(p['emissions_kg_co2e'])} CO2e"
        )
    emit(args, data, "\n".join(lines))
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    """Print the status of one budget, or of every budget in carbon.yaml and the store
    (``budget rollup``: :func:`carbonpipe.cli.budget_rollup.cmd_budget_rollup`)."""
    if getattr(args, "budget_command", "status") == "rollup":
        from carbonpipe.cli.budget_rollup import cmd_budget_rollup

        return cmd_budget_rollup(args)
    from carbonpipe.budgets.ledger import BudgetLedger
    from carbonpipe.config import resolve_settings
    from carbonpipe.units import format_mass

    s = resolve_settings(config_file=args.config, store=args.store)
    store = s.open_store()
    chosen = _status_budgets(args, s.budgets, store)
    budgets = [c.budget for c in chosen]
    ledger = BudgetLedger(store)
    statuses = [ledger.status(b.on_book()) for b in budgets]  # a total budget: its total book
    data = [st.to_dict() for st in statuses]
    lines = []
    for b, st in zip(budgets, statuses, strict=True):
        days = "-" if st.days_left is None else f"{st.days_left:.1f}"
        flag = " EXCEEDED" if st.exceeded else (" WARNING" if st.warning else "")
        lines.append(
            f"{b.scope} [{b.period}]: {format_mass(st.used_kg)} used + "
            f"{format_mass(st.reserved_kg)} reserved of {format_mass(st.limit_kg)} CO2e "
            f"({st.percent:.1f}%), {format_mass(st.burn_rate_kg_per_day)}/day, "
            f"{days} days left{flag}"
        )
    for entry, c in zip(data, chosen, strict=True):  # which definition the status used
        entry["defined_in"] = c.describe()
    lines = [f"{line}\n  defined in: {c.describe()}" for line, c in zip(lines, chosen, strict=True)]
    emit(args, data if args.scope is None else data[0], "\n".join(lines))
    return 0


def _status_budgets(
    args: argparse.Namespace, configured: Sequence[Budget], store: Store
) -> list[SourcedBudget]:
    """The budgets ``budget status`` shows: ``--limit-kg``'s, else carbon.yaml's, then the
    store's definitions of budgets given in code (carbon.yaml wins for a scope's period)."""
    from carbonpipe.budgets.budget import Budget
    from carbonpipe.budgets.definitions import (
        LISTED_KINDS,
        SourcedBudget,
        read_definitions,
        union_budgets,
    )

    if args.scope and args.limit_kg is not None:
        given = Budget(scope=args.scope, period=args.period or "month", limit_kg_co2e=args.limit_kg)
        return [SourcedBudget(given, "--limit-kg")]
    mine = [b for b in configured if not args.scope or b.scope == args.scope]
    # Every budget: pipelines' and teams' (a run's is shown when its scope is asked for).
    stored = read_definitions(store, args.scope, kinds=None if args.scope else LISTED_KINDS)
    chosen = union_budgets(mine, stored)
    if args.period:
        exact = [c for c in chosen if c.budget.period == args.period]
        chosen = exact or [
            SourcedBudget(
                Budget(
                    scope=c.budget.scope,
                    period=args.period,
                    limit_kg_co2e=c.budget.limit_kg_co2e,
                    warn_ratio=c.budget.warn_ratio,
                    on_exceed=c.budget.on_exceed,
                ),
                c.source,
                c.definition,
            )
            for c in chosen
        ]
    if args.scope and not chosen:
        raise CarbonpipeError(
            f"no budget for scope {args.scope!r} in carbon.yaml or in the store's budget "
            f"definitions ({store.url_for('budgets/definitions/')}); pass --limit-kg (and --period)"
        )
    if not chosen:
        raise CarbonpipeError(
            "no budgets configured: give SCOPE and --limit-kg, add budgets to carbon.yaml, "
            "or run a step with a budget (its definition is kept in the store)"
        )
    return chosen


def cmd_flush(args: argparse.Namespace) -> int:
    """Deliver every spooled record to its store."""
    from carbonpipe import lost_steps
    from carbonpipe.stores import spool

    # A spool others could write into is refused before anything in it is read (exit 2).
    spool.private_spool_dir(args.spool_dir, create=False)
    # Steps whose process died first: their records go out (or into the spool) before the replay.
    lost = lost_steps.sweep(args.spool_dir)
    swept = _sweep(args)
    report = spool.replay(
        args.spool_dir,
        retry_quarantined=args.retry_quarantined,
        trust_unsealed=args.trust_unsealed,
    )
    data: dict[str, Any] = {
        "delivered": report.delivered,
        "duplicates": report.duplicates,
        "remaining": report.remaining,
        "failed": list(report.failed),
    }
    text = (
        f"delivered {report.delivered}, duplicates {report.duplicates}, remaining {report.remaining}"
        + "".join(f"\n  failed: {f}" for f in report.failed)
    )
    data["quarantined"] = len(report.quarantined)
    data["quarantine"] = [q.to_dict() for q in report.quarantined]
    data["released"] = report.released
    text += _quarantine_text(report)
    data["lost_steps"] = lost.to_dict()
    text += _lost_steps_text(lost)
    if swept:
        data["swept"] = [s.to_dict() for s in swept]
        for s in swept:
            text += (
                f"\nswept {s.source}: found {s.found}, delivered {s.delivered}, already there "
                f"{s.duplicates}, spooled {s.spooled}"
                + "".join(f"\n  invalid: {i}" for i in s.invalid)
            )
    emit(args, data, text)
    bad = any(s.invalid or s.conflicts for s in swept) or bool(lost.failed)
    return 0 if report.remaining == 0 and not report.quarantined and not bad else 1


def _lost_steps_text(lost: LostReport) -> str:
    """What flush says about steps whose process died before they stopped."""
    text = ""
    if lost.lost or lost.finished:
        text += (
            f"\nlost steps: {lost.lost} recorded with status lost, {lost.finished} final "
            f"record(s) recovered ({lost.spooled} spooled)"
        )
    if lost.running:
        text += f"\nopen steps still running: {lost.running}"
    return text + "".join(f"\n  lost step not recovered: {f}" for f in lost.failed)


def _quarantine_text(report: ReplayReport) -> str:
    """What flush says about the quarantine: each entry, its reason and where it is."""
    if not report.quarantined and not report.released:
        return ""
    text = f"\nquarantined {len(report.quarantined)}"
    if report.released:
        text += f" (after retrying {report.released})"
    for q in report.quarantined:
        text += f"\n  {q.reason}: {q.path}\n    {q.error}"
    if report.quarantined:
        text += (
            "\n  these can never be delivered as they are; each has a .reason.json beside it. "
            "Fix the cause, then: carbonpipe flush --retry-quarantined"
        )
    return text


def _sweep(args: argparse.Namespace) -> list[SweepReport]:
    """Deliver the record copies found in each ``--from`` source (before the spool's replay)."""
    if not args.sweep_from:
        return []
    from carbonpipe.config import resolve_settings
    from carbonpipe.sweep import sweep

    settings = resolve_settings(config_file=args.config, store=args.store)
    store = settings.open_store()
    try:
        return [sweep(source, store, spool_dir=args.spool_dir) for source in args.sweep_from]
    finally:
        store.close()


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved settings and their sources."""
    from carbonpipe.config import resolve_settings
    from carbonpipe.stores.redact import redact

    s = resolve_settings(config_file=args.config)
    data = s.to_dict()
    for entry in data.values():  # a store or endpoint URL may carry a password: never shown
        if isinstance(entry.get("value"), str):
            entry["value"] = redact(entry["value"])
    width = max(len(k) for k in data)
    text = "\n".join(f"{k:<{width}}  {v['value']!s:<30}  ({v['source']})" for k, v in data.items())
    emit(args, data, text)
    return 0
