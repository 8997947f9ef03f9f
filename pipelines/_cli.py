"""What every ready pipeline module shares: a lazily built pipeline and its command line.

    python -m carbonpipe.pipelines.<name> --compile OUT.yaml [--run-local --store URI ...]

Nothing here imports kfp until a pipeline is built, compiled or run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_STORE = "./carbon-artifacts"


def lazy_pipeline(module: str, attribute: str, build: Callable[[], Any]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` that builds ``attribute`` on first access and keeps it."""
    import sys

    def __getattr__(name: str) -> Any:
        if name != attribute:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = build()
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__


def pipeline_parser(prog: str, description: str, store_help: str) -> argparse.ArgumentParser:
    """The options every pipeline module takes; callers add their own run arguments."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--compile", metavar="OUT.yaml", help="write the compiled pipeline here")
    parser.add_argument("--run-local", action="store_true", help="run it here with kfp.local")
    parser.add_argument(
        "--pipeline-root", default="./local_outputs", help="kfp.local's output folder"
    )
    parser.add_argument("--store", default=DEFAULT_STORE, help=store_help)
    return parser


def compile_or_run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    build: Callable[[], Any],
    run: Callable[[Any, argparse.Namespace], str],
) -> int:
    """Parse ``argv``, compile the pipeline and/or run it with kfp.local; print what happened.

    ``run(pipeline, args)`` runs it (through :func:`carbonpipe.components.run_local`) and
    returns the line to print.
    """
    args = parser.parse_args(argv)
    if not (args.compile or args.run_local):
        parser.error("give --compile OUT.yaml and/or --run-local")
    from carbonpipe.components import compile_pipeline

    pipeline = build()
    if args.compile:
        print(compile_pipeline(pipeline, args.compile))
    if args.run_local:
        print(run(pipeline, args))
    return 0
