"""Lazy public names for carbonpipe's packages, so importing one costs a DAG file nothing.

Each package maps a public name to the module that defines it (``"pkg.mod"``, or
``"pkg.mod:attr"`` when the attribute is named differently) and installs the module hooks::

    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` (PEP 562) of ``package``."""

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        setattr(sys.modules[package], name, value)  # resolved once; later lookups skip this
        return value

    def __dir__() -> list[str]:
        return list(public)

    return __getattr__, __dir__
