"""The ``carbonpipe`` command: run, detect, report, budget, flush, config (each with --json).

``carbonpipe run [options] -- CMD ARGS...`` runs any command as a tracked step: it forwards
signals to the command, exits with the command's exit code (128+N if it died of signal N),
prints a one-line summary to stderr and writes the record. Tracking problems never change
that exit code; only a budget gate does, on purpose:

* exit 3  (``EXIT_BUDGET_EXCEEDED``): the budget's ``on_exceed`` is ``fail`` and the step would
  overrun it, or its ledger could not be read within the gate's deadline (unless
  ``--budget-when-unavailable run``); the command was not started.
* exit 0 with "skipped" on stderr: ``on_exceed`` is ``skip``; the command was not started.
* exit 2: bad options or settings (store URI, provider, labels, env, carbon.yaml, a `file:`
  intensity source that cannot be read), or a strict
  budget with no way to estimate the step (``--budget-estimate-kg``); the command was not
  started.

As the container entrypoint, the wrapper must not make a step slower: without a budget to gate
on, it checks the input, reads the step's energy counters and starts the command before it
imports anything else (argparse, logging, CodeCarbon's sidecar, the store); the measured window
opens at those counters, and everything else is set up while the command runs.
"""

from __future__ import annotations

import contextlib
import os
import sys

from carbonpipe.cli.console import configure_logging
from carbonpipe.cli.options import _LOCATION_OPTIONS, _RUN_OPTIONS, _add_options
from carbonpipe.cli.run import cmd_run, scan_run
from carbonpipe.errors import CarbonpipeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``carbonpipe`` command."""
    import argparse
    from datetime import date

    parser = argparse.ArgumentParser(
        prog="carbonpipe",
        description="Carbon accounting for ML pipeline steps (CodeCarbon inside).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a command as a tracked step: carbonpipe run [opts] -- CMD"
    )
    _add_options(run, _RUN_OPTIONS)
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its arguments")

    det = sub.add_parser("detect", help="print where this machine is and its grid intensity")
    _add_options(det, _LOCATION_OPTIONS)
    det.add_argument("--json", action="store_true")

    rep = sub.add_parser("report", help="summarise the records in a store")
    rep.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or ./carbon-artifacts)")
    rep.add_argument("--pipeline")
    rep.add_argument("--start", type=date.fromisoformat, help="first UTC date, YYYY-MM-DD")
    rep.add_argument("--end", type=date.fromisoformat, help="last UTC date, YYYY-MM-DD")
    rep.add_argument("--json", action="store_true")

    bud = sub.add_parser("budget", help="carbon budgets")
    bsub = bud.add_subparsers(dest="budget_command", required=True)
    st = bsub.add_parser("status", help="used, reserved, remaining, burn rate of a budget")
    st.add_argument(
        "scope", nargs="?", help="pipeline:NAME or team:NAME (default: all in carbon.yaml)"
    )
    st.add_argument("--store")
    st.add_argument("--config")
    st.add_argument("--limit-kg", type=float, help="limit, when the scope is not in carbon.yaml")
    st.add_argument("--period", default=None, choices=["month", "quarter", "year", "total"])
    st.add_argument("--json", action="store_true")
    from carbonpipe.cli.budget_rollup import add_parser as add_rollup

    add_rollup(bsub)

    fl = sub.add_parser("flush", help="deliver records spooled while a store was down")
    fl.add_argument("--spool-dir")
    fl.add_argument(
        "--retry-quarantined",
        action="store_true",
        help="move the quarantined entries back to pending and replay them with the others",
    )
    fl.add_argument(
        "--trust-unsealed",
        action="store_true",
        help="seal and replay entries an older carbonpipe spooled without a seal (check the "
        "stores and keys flush lists first); a forged or altered seal stays quarantined",
    )
    fl.add_argument(
        "--from",
        dest="sweep_from",
        action="append",
        default=[],
        metavar="SOURCE",
        help="also deliver the record copies steps left with their orchestrator: a KFP "
        "pipeline root (folder, s3://, gs://) or airflow: (XCom); repeatable",
    )
    fl.add_argument("--store", help="store the swept records go to (default: CARBONPIPE_STORE)")
    fl.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")
    fl.add_argument("--json", action="store_true")

    cfg = sub.add_parser("config", help="show the resolved settings and where each came from")
    cfg.add_argument("--config")
    cfg.add_argument("--json", action="store_true")

    _register_extensions(sub)
    return parser


def _register_extensions(sub: Any) -> None:
    """Let optional modules (ESG, baselines, plots) add their subcommands."""
    extensions = ("esg", "export", "sql", "migrate", "reprice")
    for module in (f"carbonpipe.cli.{name}" for name in extensions):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        mod.register(sub)


# Each command's handler, imported when that command runs: ``carbonpipe run`` loads no other.
_COMMANDS = {
    "detect": "carbonpipe.cli.commands:cmd_detect",
    "report": "carbonpipe.cli.commands:cmd_report",
    "budget": "carbonpipe.cli.commands:cmd_budget",
    "flush": "carbonpipe.cli.commands:cmd_flush",
    "config": "carbonpipe.cli.commands:cmd_config",
}


def _handler(command: str) -> Callable[[Any], int] | None:
    if command == "run":
        return cmd_run
    target = _COMMANDS.get(command)
    if target is None:
        return None
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carbonpipe`` console script."""
    from_console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    fast = scan_run(argv)  # a plain ``run``: the command starts before argparse is even loaded
    if fast is not None:
        code = _dispatch(cmd_run, fast)
        if from_console:  # the wrapper process itself: it has nothing left to tear down
            _leave(code)
        return code
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    handler = _handler(args.command) or getattr(args, "handler", None)
    if handler is None:
        parser.error(f"unknown command {args.command}")
    return _dispatch(handler, args)


def _leave(code: int) -> None:
    """End ``carbonpipe run``'s own process at once, its step recorded and its output flushed.

    The exit handlers run as at any exit (spool replay, the lost-step sweep's wait, logging's
    flush); what is skipped is the interpreter tearing down its few hundred modules one by one,
    some 15-20 ms the step's pod would wait for nothing. With a non-daemon thread alive, the
    ordinary exit instead.
    """
    import atexit
    import threading

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if run_exit_handlers is None or any(not t.daemon for t in others):
        # Another interpreter, or a non-daemon thread (an SDK's executor, say) that the
        # interpreter's own shutdown knows how to end: the ordinary exit.
        return
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code & 0xFF)


def _dispatch(handler: Callable[[Any], int], args: argparse.Namespace) -> int:
    try:
        return int(handler(args))
    except (CarbonpipeError, ValueError, TypeError) as exc:
        from carbonpipe.stores.redact import redact  # a store URL may carry a password

        print(redact(f"carbonpipe {args.command}: {exc}"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
