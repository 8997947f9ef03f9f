"""carbon.yaml's ``measure:`` and ``intensity:`` sections and the Prometheus URL, checked.

Part of :mod:`carbonpipe.config`, which resolves every setting; kept apart for size. Like it,
this module imports neither typing, dataclasses nor pathlib: ``carbonpipe run`` loads it before
it starts the command.
"""

from __future__ import annotations

import math

from carbonpipe.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

# carbon.yaml ``measure: {source: kepler, prometheus_url: http://...}`` (carbonpipe.measure.kepler).
MEASURE_SOURCES = ("codecarbon", "kepler")
# carbon.yaml ``intensity:`` keys besides ``source``; credentials are read from the environment only.
INTENSITY_KEYS = (
    "timeout_s",
    "zone",
    "url",
    "region_id",
    "postcode",
    "signal",
    "emission_factor_type",
)
_CREDENTIAL_KEYS = ("token", "api_token", "auth_token", "username", "password", "api_key", "key")


def _shown(value: object) -> str:
    """A value for an error message: its repr, cut to 80 characters however big it is."""
    from carbonpipe._safejson import short_repr

    return short_repr(value)


def _prometheus_url(value: Any, where: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    scheme, _, rest = text.partition("://")
    if scheme not in ("http", "https") or not rest.partition("/")[0]:
        raise ConfigError(
            f"{where} must be Prometheus' http:// or https:// URL (e.g. "
            f"http://prometheus.monitoring:9090), got {_shown(value)}"
        )
    if "@" in rest.partition("/")[0]:
        raise ConfigError(f"{where} must not hold credentials (user:password@)")
    return text


def _measure_options(value: Any, path: Path | None) -> str | None:
    """carbon.yaml's ``measure:`` mapping -> the Kepler Prometheus URL (None: CodeCarbon)."""
    import difflib

    if not isinstance(value, dict):
        raise ConfigError(f"{path}: measure must be a mapping {{source, prometheus_url}}")
    for key in value:
        if key not in ("source", "prometheus_url"):
            near = difflib.get_close_matches(str(key), ["source", "prometheus_url"], n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(
                f"{path}: measure.{str(key)[:40]} is not a setting; accepted: source, "
                f"prometheus_url{hint}"
            )
    source = str(value.get("source", "codecarbon")).lower()
    if source not in MEASURE_SOURCES:
        near = difflib.get_close_matches(source, MEASURE_SOURCES, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise ConfigError(
            f"{path}: measure.source must be one of {', '.join(MEASURE_SOURCES)}, got "
            f"{_shown(value.get('source'))}{hint}"
        )
    if source == "codecarbon":
        return None
    if value.get("prometheus_url") is None:
        raise ConfigError(f"{path}: measure.source kepler needs measure.prometheus_url")
    return _prometheus_url(value["prometheus_url"], f"measure.prometheus_url (from {path})")


def _intensity_options(value: Any, path: Path | None) -> dict[str, Any]:
    """Check carbon.yaml's ``intensity:`` mapping; return it with ``timeout_s`` a number."""
    import difflib

    if not isinstance(value, dict):
        raise ConfigError(f"{path}: intensity must be a mapping {{source, timeout_s, zone, ...}}")
    options = dict(value)
    for key in options:
        if str(key).lower() in _CREDENTIAL_KEYS:
            raise ConfigError(
                f"{path}: intensity.{key}: credentials are read from the environment only "
                "(ELECTRICITYMAPS_API_TOKEN, WATTTIME_USERNAME, WATTTIME_PASSWORD), never from "
                "carbon.yaml"
            )
        if key != "source" and key not in INTENSITY_KEYS:
            near = difflib.get_close_matches(str(key), ["source", *INTENSITY_KEYS], n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(
                f"{path}: intensity.{str(key)[:40]} is not a setting; accepted: source, "
                f"{', '.join(INTENSITY_KEYS)}{hint}"
            )
    if "timeout_s" in options:
        where = f"intensity.timeout_s (from {path})"
        try:
            timeout = float(options["timeout_s"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where} must be a number, got {_shown(options['timeout_s'])}"
            ) from None
        if not (math.isfinite(timeout) and 0 < timeout <= 60):
            raise ConfigError(
                f"{where} must be more than 0 and at most 60 seconds (the most a step's stop "
                f"waits for the source), got {_shown(options['timeout_s'])}"
            )
        options["timeout_s"] = timeout
    for key in ("zone", "url", "postcode", "signal", "emission_factor_type"):
        if key in options and not isinstance(options[key], str):
            raise ConfigError(f"{path}: intensity.{key} must be a string")
    if "@" in str(options.get("url", "")).partition("://")[2].partition("/")[0]:
        raise ConfigError(
            f"{path}: intensity.url must not hold credentials (user:password@); they are read "
            "from the environment only"
        )
    options.pop("source", None)
    return options
