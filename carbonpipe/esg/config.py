"""The ``esg:`` settings (organisation, boundary, market factors, team sizes, targets) and the
report's fixed statements, read from carbon.yaml over the shipped ``data/esg.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonpipe.errors import ConfigError

if TYPE_CHECKING:
    from carbonpipe.budgets.budget import Budget
DATA_FILE = Path(__file__).parent / "data" / "esg.yaml"
CLOUD_PROVIDERS = ("gcp", "aws", "azure")
SCOPES = ("scope_2", "scope_3_category_1")


# ---------------------------------------------------------------------------------------------
# Configuration: the ``esg:`` section of carbon.yaml


@dataclass(frozen=True, kw_only=True)
class MarketFactor:
    """A contractual (market-based) emission factor for one provider, or one of its regions."""

    provider: str
    region: str | None
    intensity_g_per_kwh: float
    source: str
    vintage: str


@dataclass(frozen=True, kw_only=True)
class Target:
    """A sustainability target: an annual reduction against a baseline, or an intensity cap."""

    name: str
    scope: str = "all"  # all | team:NAME | pipeline:NAME
    reduction_percent: float | None = None
    baseline_kg_co2e: float | None = None  # per year
    baseline_year: str | None = None
    target_year: int | None = None
    max_intensity_g_per_kwh: float | None = None


@dataclass(frozen=True, kw_only=True)
class EsgConfig:
    """What carbon.yaml says about the report: organisation, boundary, teams, targets."""

    organisation: str = ""
    boundary: Mapping[str, Any] = field(default_factory=dict)
    team_sizes: Mapping[str, int] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    market_label: str = ""
    market_factors: tuple[MarketFactor, ...] = ()
    own_compute_scope: str = "scope_2"
    top_workloads: int = 5
    budgets: tuple[Budget, ...] = ()


_ESG_KEYS = (
    "organisation",
    "boundary",
    "team_sizes",
    "targets",
    "market_based",
    "own_compute_scope",
    "top_workloads",
    "regression",
)


def load_esg_config(source: Mapping[str, Any] | str | Path | None = None) -> EsgConfig:
    """Build the report's configuration from carbon.yaml (a path, its parsed mapping, or found)."""
    if source is None or isinstance(source, (str, Path)):
        from carbonpipe.config import load_config_file

        data, _ = load_config_file(source)
    else:
        data = dict(source)
    section = data.get("esg") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"esg: must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(_ESG_KEYS))
    if unknown:
        raise ConfigError(f"esg: unknown key(s) {unknown}; accepted: {', '.join(_ESG_KEYS)}")
    budgets: tuple[Budget, ...] = ()
    if data.get("budgets") is not None:
        from carbonpipe.budgets.budget import load_budgets

        budgets = tuple(load_budgets(data))
    boundary = section.get("boundary") or {}
    if isinstance(boundary, str):
        boundary = {"description": boundary}
    if not isinstance(boundary, Mapping):
        raise ConfigError(
            "esg.boundary: must be a mapping {approach, description, includes, excludes}"
        )
    sizes = section.get("team_sizes") or {}
    if not isinstance(sizes, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes.values()
    ):
        raise ConfigError("esg.team_sizes: must map team names to whole numbers of developers > 0")
    scope = section.get("own_compute_scope", "scope_2")
    if scope not in SCOPES:
        raise ConfigError(f"esg.own_compute_scope: {scope!r} is not one of {', '.join(SCOPES)}")
    top = section.get("top_workloads", 5)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConfigError(f"esg.top_workloads: must be a whole number >= 0, got {top!r}")
    label, factors = _market(section.get("market_based"))
    return EsgConfig(
        organisation=str(section.get("organisation") or ""),
        boundary=dict(boundary),
        team_sizes={str(k): int(v) for k, v in sizes.items()},
        targets=tuple(_target(i, t) for i, t in enumerate(section.get("targets") or [])),
        market_label=label,
        market_factors=factors,
        own_compute_scope=scope,
        top_workloads=top,
        budgets=budgets,
    )


def _number(where: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{where}: must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _market(section: Any) -> tuple[str, tuple[MarketFactor, ...]]:
    if not section:
        return "", ()
    if not isinstance(section, Mapping) or not isinstance(section.get("factors"), list):
        raise ConfigError("esg.market_based: must be a mapping with a 'factors' list")
    factors = []
    for i, f in enumerate(section["factors"]):
        where = f"esg.market_based.factors[{i}]"
        if not isinstance(f, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        for name in ("provider", "source", "vintage"):
            if not isinstance(f.get(name), (str, int)) or not str(f.get(name)).strip():
                raise ConfigError(f"{where}.{name}: required (the factor's origin must be cited)")
        factors.append(
            MarketFactor(
                provider=str(f["provider"]),
                region=str(f["region"]) if f.get("region") else None,
                intensity_g_per_kwh=_number(
                    f"{where}.intensity_g_per_kwh", f.get("intensity_g_per_kwh")
                ),
                source=" ".join(str(f["source"]).split()),
                vintage=str(f["vintage"]),
            )
        )
    label = str(section.get("label") or "market-based (configured contractual factors)")
    return label, tuple(factors)


def _target(i: int, t: Any) -> Target:
    where = f"esg.targets[{i}]"
    if not isinstance(t, Mapping) or not t.get("name"):
        raise ConfigError(f"{where}: must be a mapping with a name")
    scope = str(t.get("scope", "all"))
    if scope != "all" and scope.partition(":")[0] not in ("team", "pipeline"):
        raise ConfigError(f"{where}.scope: {scope!r} is not all, team:NAME or pipeline:NAME")
    if "max_intensity_g_per_kwh" in t:
        cap = _number(
            f"{where}.max_intensity_g_per_kwh", t["max_intensity_g_per_kwh"], positive=True
        )
        return Target(name=str(t["name"]), scope=scope, max_intensity_g_per_kwh=cap)
    for need in ("reduction_percent", "baseline_kg_co2e"):
        if need not in t:
            raise ConfigError(
                f"{where}.{need}: required (or give max_intensity_g_per_kwh for an intensity target)"
            )
    reduction = _number(f"{where}.reduction_percent", t["reduction_percent"], positive=True)
    if reduction > 100:
        raise ConfigError(f"{where}.reduction_percent: must be <= 100, got {reduction}")
    target_year = t.get("target_year")
    if target_year is not None and (
        isinstance(target_year, bool) or not isinstance(target_year, int)
    ):
        raise ConfigError(f"{where}.target_year: must be a year, got {target_year!r}")
    return Target(
        name=str(t["name"]),
        scope=scope,
        reduction_percent=reduction,
        baseline_kg_co2e=_number(f"{where}.baseline_kg_co2e", t["baseline_kg_co2e"], positive=True),
        baseline_year=str(t["baseline_year"]) if t.get("baseline_year") is not None else None,
        target_year=target_year,
    )


@lru_cache(maxsize=1)
def statements() -> dict[str, Any]:
    """Return ``data/esg.yaml``: the GHG Protocol statements and method notes, with sources."""
    import yaml

    doc = yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("schema") != "carbonpipe.esg/1":
        raise ValueError(f"{DATA_FILE}: expected schema carbonpipe.esg/1")
    for name, s in doc["statements"].items():
        missing = [k for k in ("title", "statement", "source", "vintage") if not s.get(k)]
        if missing:
            raise ValueError(f"{DATA_FILE}: statement {name!r} lacks {', '.join(missing)}")
    return doc
