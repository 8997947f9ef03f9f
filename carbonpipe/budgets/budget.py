"""A carbon budget's definition, checked when it is made, and budgets read from carbon.yaml."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonpipe.budgets.charges import (
    book_scope,
    kg_to_ug,
    parse_scope,
)
from carbonpipe.errors import (
    ConfigError,
)

if TYPE_CHECKING:
    pass
from carbonpipe.budgets.period import PERIODS

ON_EXCEED = ("fail", "skip")
#: What a budget counts: operational emissions (the default) or operational + embodied.
BASES = ("operational", "total")
WHEN_UNAVAILABLE = ("refuse", "run")
DEFAULT_WARN_RATIO = 0.8
# The gate's whole decision (estimate, ledger read, reservation) gets this long, then a budget
# whose ledger has not answered counts as unavailable: a failing store never holds a step long.
DEFAULT_GATE_TIMEOUT_S = 5.0
#: A reservation's lease when the step has no earlier run to size it from (see budgets.lease).
DEFAULT_LEASE_S = 900.0
MAX_LEASE_S = 24 * 3600.0
MAX_GATE_TIMEOUT_S = 600.0


# ---------------------------------------------------------------------------------------------
# Budgets and carbon.yaml


class _FieldError(ValueError):
    """A bad Budget argument; ``load_budgets`` re-labels it with its carbon.yaml path."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"Budget {field_name}: {problem}")
        self.field_name = field_name
        self.problem = problem


def _check_number(
    name: str, value: object, *, positive: bool = False, at_most: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        from carbonpipe._safejson import short_repr

        raise _FieldError(name, f"must be a number, got {type(value).__name__} {short_repr(value)}")
    low_ok = value > 0 if positive else value >= 0
    if not math.isfinite(value) or not low_ok or (at_most is not None and value > at_most):
        bound = "> 0" if positive else ">= 0"
        upper = f" and <= {at_most:g}" if at_most is not None else ""
        raise _FieldError(name, f"must be a finite number {bound}{upper}, got {value!r}")
    return float(value)


def _given(value: object) -> bool:
    # NaN marks "not given" for the kg fields, whose unit twin (grams) may be given instead.
    return not (isinstance(value, float) and math.isnan(value))


def _one_amount_kg(
    kg_name: str, kg: object, g_name: str, g: object, *, positive: bool
) -> float | None:
    if _given(kg) and g is not None:
        raise _FieldError(g_name, f"give {kg_name} or {g_name}, not both")
    if g is not None:
        return _check_number(g_name, g, positive=positive) / 1000.0
    if _given(kg):
        return _check_number(kg_name, kg, positive=positive)
    return None


_UNSET = math.nan


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A cap on the CO2e one pipeline, team or run may emit in a UTC period.

    Give the limit (and the default step estimate) in kg or in g; either way the budget keeps kg.
    When the ledger cannot be read within ``gate_timeout_s`` seconds, ``when_unavailable``
    decides: ``refuse`` (the default) treats the step as over budget (``on_exceed`` applies);
    ``run`` lets it run ungated and says so in its record. A step's reservation is a lease
    that its process renews while it runs; ``lease_s`` is its length when the step has no
    earlier run to size it from (:mod:`carbonpipe.budgets.lease`). ``basis`` says what it
    counts: ``operational`` emissions (the default, ``emissions_kg_co2e``) or ``total``
    (operational + embodied, ``total_kg_co2e``), kept on the scope's total book
    (:meth:`on_book`), which trackers that know the budget charge.
    """

    scope: str
    period: str
    limit_kg_co2e: float = _UNSET
    warn_ratio: float = DEFAULT_WARN_RATIO
    on_exceed: str = "fail"
    default_step_estimate_kg: float = _UNSET
    when_unavailable: str = "refuse"
    gate_timeout_s: float = DEFAULT_GATE_TIMEOUT_S
    lease_s: float = DEFAULT_LEASE_S
    basis: str = "operational"
    limit_g_co2e: InitVar[float | None] = None
    default_step_estimate_g: InitVar[float | None] = None

    def __post_init__(
        self, limit_g_co2e: float | None, default_step_estimate_g: float | None
    ) -> None:
        try:
            parse_scope(self.scope)
        except ValueError as exc:
            raise _FieldError("scope", str(exc).removeprefix("scope ")) from None
        if self.period not in PERIODS:
            raise _FieldError("period", f"{self.period!r} is not one of {', '.join(PERIODS)}")
        limit = _one_amount_kg(
            "limit_kg_co2e", self.limit_kg_co2e, "limit_g_co2e", limit_g_co2e, positive=True
        )
        if limit is None:
            raise _FieldError("limit_kg_co2e", "required (or limit_g_co2e)")
        if kg_to_ug(limit) < 1:
            raise _FieldError("limit_kg_co2e", f"{limit!r} kg is below one microgram")
        estimate = _one_amount_kg(
            "default_step_estimate_kg",
            self.default_step_estimate_kg,
            "default_step_estimate_g",
            default_step_estimate_g,
            positive=False,
        )
        _check_number("warn_ratio", self.warn_ratio, positive=True, at_most=1.0)
        if self.on_exceed not in ON_EXCEED:
            raise _FieldError(
                "on_exceed", f"{self.on_exceed!r} is not one of {', '.join(ON_EXCEED)}"
            )
        if self.basis not in BASES:
            raise _FieldError("basis", f"{self.basis!r} is not one of {', '.join(BASES)}")
        if self.when_unavailable not in WHEN_UNAVAILABLE:
            raise _FieldError(
                "when_unavailable",
                f"{self.when_unavailable!r} is not one of {', '.join(WHEN_UNAVAILABLE)}",
            )
        timeout = _check_number(
            "gate_timeout_s", self.gate_timeout_s, positive=True, at_most=MAX_GATE_TIMEOUT_S
        )
        lease = _check_number("lease_s", self.lease_s, positive=True, at_most=MAX_LEASE_S)
        # Frozen: the unit conversion is the one write __post_init__ is allowed.
        object.__setattr__(self, "limit_kg_co2e", limit)
        object.__setattr__(self, "default_step_estimate_kg", estimate or 0.0)
        object.__setattr__(self, "warn_ratio", float(self.warn_ratio))
        object.__setattr__(self, "gate_timeout_s", timeout)
        object.__setattr__(self, "lease_s", lease)

    @property
    def scope_kind(self) -> str:
        """``pipeline``, ``team`` or ``run``."""
        return parse_scope(self.scope)[0]

    @property
    def scope_name(self) -> str:
        """The pipeline's, team's or run's name."""
        return parse_scope(self.scope)[1]

    def on_book(self) -> Budget:
        """This budget on the ledger book its basis counts: itself for ``operational``; for
        ``total``, the same budget on the scope's total book (:func:`book_scope`), whose
        charges are operational + embodied."""
        book = book_scope(self.scope, self.basis)
        if book == self.scope:
            return self
        from dataclasses import replace

        return replace(self, scope=book)


_YAML_FIELDS = (
    "scope",
    "period",
    "limit_kg_co2e",
    "limit_g_co2e",
    "warn_ratio",
    "on_exceed",
    "default_step_estimate_kg",
    "default_step_estimate_g",
    "when_unavailable",
    "gate_timeout_s",
    "lease_s",
    "basis",
)


def load_budgets(source: str | os.PathLike[str] | Mapping[str, Any]) -> list[Budget]:
    """Read the ``budgets:`` list of a carbon.yaml (a path, or the parsed mapping) into Budgets.

    Raises :class:`ConfigError` naming the bad field, e.g.
    ``budgets[1].period: 'weekly' is not one of month, quarter, year, total``.
    """
    if isinstance(source, Mapping):
        config: Any = source
        where = "carbon.yaml"
    else:
        import yaml

        from carbonpipe._safeyaml import UnsafeYAML, load_file

        path = Path(source)
        where = str(path)
        try:
            config = load_file(path)
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except UnsafeYAML as exc:
            raise ConfigError(f"{where}: refused: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if config is None:
        return []
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: must be a mapping with a 'budgets:' list")
    entries = config.get("budgets")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"budgets: must be a list of budgets, got {type(entries).__name__}")
    budgets: list[Budget] = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, entry in enumerate(entries):
        label = f"budgets[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{label}: must be a mapping, got {type(entry).__name__}")
        for name in entry:
            if name not in _YAML_FIELDS:
                raise ConfigError(
                    f"{label}.{name}: unknown field; accepted: {', '.join(_YAML_FIELDS)}"
                )
        for name in ("scope", "period"):
            if name not in entry:
                raise ConfigError(f"{label}.{name}: required")
        try:
            budget = Budget(**entry)
        except _FieldError as exc:
            raise ConfigError(f"{label}.{exc.field_name}: {exc.problem}") from None
        ident = (budget.scope, budget.period, budget.basis)
        if ident in seen:
            raise ConfigError(
                f"{label}: duplicates budgets[{seen[ident]}] "
                f"(scope {budget.scope}, period {budget.period}, basis {budget.basis})"
            )
        seen[ident] = i
        budgets.append(budget)
    return budgets
