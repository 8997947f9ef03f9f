"""The ``carbonpipe`` command: run, detect, report, budget, flush, config, esg, baseline, plot.

``app`` (the parser, ``main``, dispatch), ``run`` (``carbonpipe run -- CMD``, which starts the
command before it loads the tracking), ``lifeline`` (the command dies with the wrapper; as
PID 1 the wrapper reaps orphans), ``options`` (``run``'s option tables), ``commands``
(detect, report, budget, flush, config), ``esg`` (esg, baseline, plot), ``console`` (``--json``
or text, and ``-v``).

May import: every package below it; nothing imports it but ``integrations``.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "build_parser": "carbonpipe.cli.app",
    "main": "carbonpipe.cli.app",
}

__all__ = [
    "build_parser",
    "main",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.cli.app import build_parser, main
