"""``carbonpipe budget rollup``: write the per-day rollups of closed days, as the nightly job does.

A gate decision reads each closed day of its period from one small rollup, and lists only the
days still open (:mod:`carbonpipe.budgets.rollup`). Whoever first reads a closed day without a
rollup writes it; this command (and the nightly ESG job) does it ahead of the gates, so the
first step after a busy day does not pay for listing that day's charges.

Exit 0 when every scope is rolled up; 1 when the store cannot be read or a rollup could not be
written (one line each, no traceback); 2 on bad input, the option named.
"""

from __future__ import annotations

import sys

from carbonpipe.cli.console import emit
from carbonpipe.errors import CarbonpipeError, ConfigError, StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from carbonpipe.budgets.budget import Budget
    from carbonpipe.budgets.rollup import RollUpReport


def add_parser(bsub: Any) -> None:
    """Add ``rollup`` to the ``budget`` subcommands."""
    ru = bsub.add_parser(
        "rollup",
        help="write the rollups of closed days (the nightly job's step): every budget in "
        "carbon.yaml and the store, or --scope",
    )
    ru.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or ./carbon-artifacts)")
    ru.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    ru.add_argument("--scope", help="roll up this scope only: pipeline:NAME or team:NAME")
    ru.add_argument(
        "--period",
        choices=["month", "quarter", "year", "total"],
        help="with --scope: the period to roll up (default: its budgets' periods, else month)",
    )
    ru.add_argument(
        "--relist",
        action="store_true",
        help="list every closed day again (charges written by versions without late markers)",
    )
    ru.add_argument("--json", action="store_true")


def cmd_budget_rollup(args: argparse.Namespace) -> int:
    """Roll up the closed days of every budget (or of ``--scope``); one line per scope."""
    from carbonpipe.budgets.charges import parse_scope
    from carbonpipe.budgets.rollup import roll_up_all
    from carbonpipe.config import resolve_settings

    if args.period and not args.scope:
        raise ConfigError("--period: give it with --scope (each budget has its own period)")
    if args.scope:
        try:
            parse_scope(args.scope)
        except ValueError as exc:
            raise ConfigError(f"--scope: {exc}") from None
    s = resolve_settings(config_file=args.config, store=args.store)
    store = s.open_store()
    try:
        targets: list[Budget | tuple[str, str]] = list(s.budgets)
        if args.scope:
            targets = _scope_targets(args, store, s.budgets)
        reports = roll_up_all(store, targets, relist=args.relist, stored=not args.scope)
    except StoreError as exc:
        from carbonpipe.stores.redact import redact

        print(redact(f"carbonpipe budget rollup: store unavailable: {exc}"), file=sys.stderr)
        return 1
    finally:
        store.close()
    if not reports:
        raise CarbonpipeError(
            "no budgets configured: add budgets to carbon.yaml, run a step with a budget (its "
            "definition is kept in the store), or give --scope"
        )
    emit(args, [r.to_dict() for r in reports], "\n".join(_line(r) for r in reports))
    return 1 if any(r.error or r.unwritten for r in reports) else 0


def _scope_targets(
    args: argparse.Namespace, store: Any, configured: Any
) -> list[Budget | tuple[str, str]]:
    """``--scope``'s budgets (carbon.yaml's, then the store's), on ``--period`` if given; a
    scope with no budget is rolled up on ``--period`` (default month) as it is."""
    from carbonpipe.budgets.definitions import read_definitions, union_budgets

    mine = [b for b in configured if b.scope == args.scope]
    chosen = [c.budget for c in union_budgets(mine, read_definitions(store, args.scope))]
    if args.period:
        chosen = [b for b in chosen if b.period == args.period]
    if chosen:
        return list(chosen)
    return [(args.scope, args.period or "month")]


def _line(r: RollUpReport) -> str:
    head = f"{r.scope} [{r.period}]: "
    if r.error:
        return head + f"not rolled up: {r.error}"
    line = (
        f"{r.listed} closed days listed and rolled up, {r.rolled} already rolled up, "
        f"{r.elapsed_s:.2f} s; open from {r.first_open}"
    )
    if r.unwritten:
        line += f"; {r.unwritten} rollups could not be written (read-only store? see -v)"
    return head + line
