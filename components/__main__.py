"""``python -m carbonpipe.components --compile [DIR]`` writes the component YAML; ``--check``
exits 1 when the shipped YAML is out of date with the Python definitions."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Compile or check the shipped component YAML."""
    parser = argparse.ArgumentParser(prog="python -m carbonpipe.components", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--compile",
        nargs="?",
        const="",
        metavar="DIR",
        help="write the YAML (default: the package)",
    )
    group.add_argument("--check", action="store_true", help="fail if the shipped YAML is stale")
    args = parser.parse_args(argv)
    from ._compile import compile_components, stale_components

    if args.check:
        with tempfile.TemporaryDirectory() as scratch:
            stale = stale_components(scratch)
        for name, diff in stale.items():
            print(f"{name}.yaml is out of date:\n{diff}", file=sys.stderr)
        if stale:
            print("run: python -m carbonpipe.components --compile", file=sys.stderr)
        return 1 if stale else 0
    for path in compile_components(args.compile or None):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
