"""The functional unit R of the Software Carbon Intensity (SCI, ISO/IEC 21031:2024).

``SCI = (O + M) per R``: a step's operational emissions ``O`` (its energy at the data centre's
PUE times a location-based grid intensity, plus what remote model servers reported) and its
embodied share ``M``, divided by the units of work it did, ``R`` ("training run", "batch job",
"inference", "token", ...). A step declares its units with ``step.add_units(1000,
"inference")``, the tracker's ``functional_unit="training run"`` (R = 1 per step), ``carbonpipe
run --units N --unit NAME`` or the file named by ``$CARBONPIPE_UNITS_FILE``; the record carries
``functional_units: {name, count}`` and ``sci_g_per_unit``.

Nothing here does I/O: these are the checks and the one formula every entry point shares.
"""

from __future__ import annotations

import json
import math

from carbonpipe.errors import ConfigError

TYPE_CHECKING = False  # not typing's: `carbonpipe run` reads its options before importing it
if TYPE_CHECKING:
    from typing import Any

#: The longest unit name a record takes.
MAX_UNIT_NAME = 64
#: The environment variable ``carbonpipe run`` sets to a file the command may write units to.
UNITS_FILE_ENV = "CARBONPIPE_UNITS_FILE"


def check_count(count: Any, *, field: str = "count") -> float:
    """``count`` as a float: a finite number > 0, else :class:`ConfigError` naming ``field``."""
    if isinstance(count, bool) or not isinstance(count, (int, float)):
        raise ConfigError(f"{field} must be a number > 0, got {count!r}")
    try:
        value = float(count)
    except OverflowError:
        raise ConfigError(f"{field} must be a finite number > 0, got {count!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{field} must be a finite number > 0, got {count!r}")
    return value


def check_name(name: Any, *, field: str = "unit") -> str:
    """``name`` stripped: a non-empty string of at most 64 characters, else ConfigError."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{field} must be a non-empty string (e.g. 'inference'), got {name!r}")
    text = name.strip()
    if len(text) > MAX_UNIT_NAME:
        raise ConfigError(f"{field} must be at most {MAX_UNIT_NAME} characters, got {len(text)}")
    if any(not c.isprintable() for c in text):
        raise ConfigError(f"{field} must be printable text, got {name!r}")
    return text


def tracker_unit_name(name: Any) -> str:
    """The tracker's ``functional_unit`` checked (:func:`check_name`)."""
    return check_name(name, field="functional_unit")


def units(
    count: Any, name: Any, *, count_field: str = "count", name_field: str = "unit"
) -> dict[str, Any]:
    """``{"name": name, "count": count}`` checked (see :func:`check_count`, :func:`check_name`)."""
    return {
        "name": check_name(name, field=name_field),
        "count": check_count(count, field=count_field),
    }


def add(current: dict[str, Any] | None, count: Any, name: Any) -> dict[str, Any]:
    """``current`` plus ``count`` units of ``name``; a step has one functional unit.

    Raises:
        ConfigError: ``count`` or ``name`` is invalid, or ``name`` differs from the unit the
            step already declared.
    """
    new = units(count, name)
    if current is None:
        return new
    if current["name"] != new["name"]:
        raise ConfigError(
            f"unit: a step has one functional unit; it declared {current['name']!r}, "
            f"then {new['name']!r}"
        )
    return {"name": new["name"], "count": current["count"] + new["count"]}


def parse_units_text(
    text: str, *, where: str = UNITS_FILE_ENV, default_name: str | None = None
) -> dict[str, Any] | None:
    """The units a command wrote to ``$CARBONPIPE_UNITS_FILE``: ``N NAME`` (``1000 inference``)
    or JSON ``{"count": N, "name": NAME}``; None when the file is empty. With
    ``default_name`` (``carbonpipe run --unit NAME``), ``N`` alone names that unit.

    Raises:
        ConfigError: The text is neither, or its count or name is invalid (``where`` names it).
    """
    stripped = text.strip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: must be an object {{count, name}}")
        return units(
            data.get("count"),
            data.get("name", default_name),
            count_field=f"{where}.count",
            name_field=f"{where}.name",
        )
    head, _, name = stripped.partition(" ")
    name = name or (default_name or "")
    try:
        count = float(head)
    except ValueError:
        raise ConfigError(
            f"{where}: must be 'N NAME' (e.g. '1000 inference') or JSON, got {stripped[:80]!r}"
        ) from None
    return units(count, name, count_field=f"{where} count", name_field=f"{where} name")


def units_of_result(result: Any, name: str | None) -> dict[str, Any]:
    """The units a task returned (``units_from_result``): a number of ``name``, ``"N NAME"``
    (or ``"N"``, of ``name``; a multi-line text's last line) or ``{"count": N, "name": NAME}``.

    Raises:
        ConfigError: The result is none of these, or its count or name is invalid.
    """
    where = "the task's result"
    if isinstance(result, str):
        lines = [line for line in result.strip().splitlines() if line.strip()]
        found = parse_units_text(lines[-1] if lines else "", where=where, default_name=name)
        if found is None:
            raise ConfigError(f"{where} is empty: it gives no units")
        return found
    if isinstance(result, dict):
        return units(
            result.get("count"),
            result.get("name", name),
            count_field=f"{where}['count']",
            name_field=f"{where}['name'] (or functional_unit)",
        )
    return units(result, name, count_field=where, name_field="functional_unit")


def sci_g_per_unit(
    operational_kg: float, embodied_kg: float | None, functional_units: dict[str, Any] | None
) -> float | None:
    """SCI in g CO2e per unit: ``(O + M) / R``, ``M`` taken as 0 where not measured; None
    without units."""
    if not functional_units:
        return None
    total_g = (operational_kg + (embodied_kg or 0.0)) * 1000.0
    return total_g / float(functional_units["count"])
