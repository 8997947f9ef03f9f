"""Which time-series source a name opens: one line per source, one module per source.

``CARBONPIPE_INTENSITY_SOURCE`` or ``intensity: {source: ...}`` in carbon.yaml names a source:
``table`` (the default: annual figures, offline, no time series), ``electricitymaps``,
``watttime``, ``carbon-aware-sdk``, ``uk`` or ``file:PATH``. Each module listed here defines a
class with ``from_options(options, env)`` returning a
:class:`~carbonpipe.intensity.base.TimeSeriesSource`; its imports happen only when it is opened.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from carbonpipe.errors import ConfigError

TABLE = "table"
# name -> "module:Class"; the module is imported only when the source is opened.
SOURCES: dict[str, str] = {
    "electricitymaps": "carbonpipe.intensity.electricitymaps:ElectricityMapsSource",
    "watttime": "carbonpipe.intensity.watttime:WattTimeSource",
    "carbon-aware-sdk": "carbonpipe.intensity.carbonaware:CarbonAwareSdkSource",
    "uk": "carbonpipe.intensity.uk:UkCarbonIntensitySource",
    "file": "carbonpipe.intensity.file:FileSource",
}

__all__ = ["SOURCES", "TABLE", "check_source_name", "open_source"]


def check_source_name(spec: str, *, field: str = "intensity.source") -> tuple[str, str | None]:
    """Split ``spec`` into (name, argument) (``file:PATH`` -> ("file", PATH)); refuse unknown names.

    Raises ``ConfigError`` naming ``field``, the accepted names and the nearest one.
    """
    text = str(spec).strip()
    name, sep, argument = text.partition(":")
    name = name.strip().lower()
    if name == "file" and not (sep and argument.strip()):
        raise ConfigError(f"{field}: 'file' needs a path: file:PATH (a CSV or Parquet file)")
    if name == TABLE or name in SOURCES:
        return name, (argument.strip() or None) if sep else None
    accepted = [TABLE, *SOURCES]
    near = difflib.get_close_matches(name, accepted, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise ConfigError(
        f"{field}: unknown intensity source {text[:80]!r}; accepted: "
        f"{', '.join(accepted[:-1])} or file:PATH{hint}"
    )


def open_source(
    spec: str, options: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Any:
    """Open the time-series source ``spec`` names; None for ``table`` (no time series).

    ``options`` are the carbon.yaml ``intensity:`` fields; ``env`` the environment (URLs and
    credentials: ``ELECTRICITYMAPS_API_TOKEN``, ``WATTTIME_USERNAME``, ...).
    """
    import os

    name, argument = check_source_name(spec)
    if name == TABLE:
        return None
    module_name, _, class_name = SOURCES[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    merged = dict(options or {})
    if argument is not None:
        merged.setdefault("path", argument)
    return cls.from_options(merged, dict(os.environ if env is None else env))
