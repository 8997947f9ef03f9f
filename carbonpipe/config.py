"""Resolve carbonpipe's settings in one place: arguments, then ``CARBONPIPE_*``, then carbon.yaml.

Every setting remembers where its value came from, so ``carbonpipe config`` can show it.
The cloud location has its own precedence (arguments > env > metadata > default > world)
and is resolved by :func:`carbonpipe.location.detect.detect_location`; the file only supplies the
configured default location under ``location:``.

Example ``carbon.yaml``::

    store: s3://acme-carbon/prod          # or gs://..., az://..., or a folder
    store_timeout_s: 5                    # the most one store call may take (s)
    project: recsys
    team: ranking
    tracking_mode: process                # machine | process | offline
    pue: 1.1                              # default: the region's published PUE, 1.0 on premises
    instance_type: n2-standard-8          # default: the metadata server's (embodied emissions)
    embodied_lifetime_years: 4
    location: {provider: gcp, region: europe-west1}
    regression: warn                      # or fail: a step 1.2x above its baseline fails
    intensity: {source: electricitymaps, timeout_s: 5, zone: BE}  # table (default) | electricitymaps
                                          # | watttime | carbon-aware-sdk | uk | file:PATH
    measure: {source: kepler, prometheus_url: "http://prometheus.monitoring:9090"}  # the pod's
                                          # energy from Kepler (default source: codecarbon)
    budgets:
      - {scope: "pipeline:train", period: month, limit_kg_co2e: 50, on_exceed: fail}
    esg: {organisation: Acme, team_sizes: {ranking: 6}}
"""

from __future__ import annotations

import math
import os

from carbonpipe._config_sections import (
    _intensity_options,
    _measure_options,
    _prometheus_url,
    _shown,
)
from carbonpipe.errors import ConfigError
from carbonpipe.stores.uri import DEFAULT_STORE, DEFAULT_STORE_TIMEOUT_S

# ``carbonpipe run`` resolves the settings before it starts the command, when nothing else is
# loaded: this module imports neither typing, dataclasses nor pathlib (~45 ms in a fresh process).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from carbonpipe.location.detect import Location
    from carbonpipe.stores.base import Store

TRACKING_MODES = ("machine", "process", "offline")
# Where a setting came from -> the instance type's ``instance_type_by``.
_TYPE_BY = {"argument": "argument", "env": "env", "file": "config"}
REGRESSION_ACTIONS = ("warn", "fail")
CONFIG_ENV = "CARBONPIPE_CONFIG"
DEFAULT_CONFIG_FILE = "carbon.yaml"

# setting name -> (env var, parser name)
_ENV: dict[str, str] = {
    "store": "CARBONPIPE_STORE",
    "project": "CARBONPIPE_PROJECT",
    "experiment": "CARBONPIPE_EXPERIMENT",
    "pipeline": "CARBONPIPE_PIPELINE",
    "team": "CARBONPIPE_TEAM",
    "run_id": "CARBONPIPE_RUN_ID",
    "tracking_mode": "CARBONPIPE_TRACKING_MODE",
    "pue": "CARBONPIPE_PUE",
    "measure_power_secs": "CARBONPIPE_MEASURE_POWER_SECS",
    "spool_dir": "CARBONPIPE_SPOOL_DIR",
    "regression_factor": "CARBONPIPE_REGRESSION_FACTOR",
    "regression": "CARBONPIPE_REGRESSION",
    "instance_type": "CARBONPIPE_INSTANCE_TYPE",
    "embodied_lifetime_years": "CARBONPIPE_EMBODIED_LIFETIME_YEARS",
    "store_timeout_s": "CARBONPIPE_STORE_TIMEOUT_S",
    "intensity_source": "CARBONPIPE_INTENSITY_SOURCE",
    "kepler_prometheus_url": "CARBONPIPE_KEPLER_PROMETHEUS_URL",
}
DEFAULT_INTENSITY_TIMEOUT_S = 5.0


class Settings:
    """The resolved configuration of a tracker, with the origin of every value (read-only)."""

    __slots__ = (
        "store",
        "project",
        "experiment",
        "pipeline",
        "team",
        "run_id",
        "tracking_mode",
        "pue",
        "measure_power_secs",
        "spool_dir",
        "regression_factor",
        "regression",
        "instance_type",
        "embodied_lifetime_years",
        "store_timeout_s",
        "intensity_source",
        "intensity",
        "kepler_prometheus_url",
        "default_provider",
        "default_region",
        "default_country",
        "budgets",
        "config_file",
        "sources",
    )
    store: str
    project: str
    experiment: str
    pipeline: str
    team: str
    run_id: str
    tracking_mode: str
    pue: float
    measure_power_secs: float
    spool_dir: str
    regression_factor: float
    regression: str
    instance_type: str | None
    embodied_lifetime_years: float
    store_timeout_s: float
    intensity_source: str
    intensity: Mapping[str, Any]
    kepler_prometheus_url: str | None
    default_provider: str | None
    default_region: str | None
    default_country: str | None
    budgets: tuple[Any, ...]
    config_file: str | None
    sources: Mapping[str, str]

    def __init__(
        self,
        *,
        store: str = DEFAULT_STORE,
        project: str = "default",
        experiment: str = "",
        pipeline: str = "",
        team: str = "",
        run_id: str = "",
        tracking_mode: str = "machine",
        pue: float = 1.0,
        measure_power_secs: float = 5.0,
        spool_dir: str = "",
        regression_factor: float = 1.2,
        regression: str = "warn",
        instance_type: str | None = None,
        embodied_lifetime_years: float = 4.0,
        store_timeout_s: float = DEFAULT_STORE_TIMEOUT_S,
        intensity_source: str = "table",
        intensity: Mapping[str, Any] | None = None,
        kepler_prometheus_url: str | None = None,
        default_provider: str | None = None,
        default_region: str | None = None,
        default_country: str | None = None,
        budgets: tuple[Any, ...] = (),
        config_file: str | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        values = locals()  # exactly the fields, by name
        for name in self.__slots__:
            object.__setattr__(self, name, values[name])
        object.__setattr__(self, "sources", dict(sources or {}))
        object.__setattr__(self, "intensity", dict(intensity or {}))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Settings are read-only; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Settings are read-only; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # sources is a dict, as it was in the dataclass

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Settings({shown})"

    @property
    def meter_mode(self) -> str:
        """The energy meter's mode: ``offline`` measures the machine, as ``machine`` does."""
        return "machine" if self.tracking_mode == "offline" else self.tracking_mode

    def open_store(self, **options: Any) -> Store:
        """Open :attr:`store` with every call bounded by :attr:`store_timeout_s`."""
        from carbonpipe.stores.opener import open_store

        options.setdefault("timeout_s", self.store_timeout_s)
        return open_store(self.store, **options)

    def locate(
        self,
        *,
        provider: str | None = None,
        region: str | None = None,
        country_iso: str | None = None,
        deadline_s: float | None = None,
    ) -> Location:
        """Detect the location with these settings' default location and tracking mode.

        Arguments win; ``offline`` tracking never probes a metadata server. ``deadline_s``:
        the time detection may take (default: detection's own, 60 ms).
        """
        from carbonpipe.location.detect import DEFAULT_DEADLINE_S, detect_location

        return detect_location(
            provider=provider,
            region=region,
            country_iso=country_iso,
            default_provider=self.default_provider,
            default_region=self.default_region,
            default_country=self.default_country,
            probe=self.tracking_mode != "offline",
            instance_type=self.instance_type,
            instance_type_by=_TYPE_BY.get(self.sources.get("instance_type", ""), "argument"),
            deadline_s=DEFAULT_DEADLINE_S if deadline_s is None else deadline_s,
        )

    @property
    def timeseries_source(self) -> str | None:
        """The time-series intensity source configured (``electricitymaps``, ``file:PATH``,
        ...), or None for the annual table: what a step's pricing has to load and ask."""
        spec = str(self.intensity_source or "").strip()
        return spec if spec and spec.lower() != "table" else None

    def check_intensity_source(self) -> None:
        """Read a ``file:PATH`` intensity source now, before a step starts.

        Raises :class:`ConfigError` naming the setting (``CARBONPIPE_INTENSITY_SOURCE`` or
        carbon.yaml's ``intensity.source``), the file, the line and column and the fix. Any
        other source costs nothing here: no module is imported and no network source is
        contacted (they are asked at the step's stop, and fall back to the table).
        """
        name, sep, path = str(self.intensity_source or "").partition(":")
        if not sep or name.strip().lower() != "file" or not path.strip():
            return
        origin = self.sources.get("intensity_source")
        if origin == "env":
            field = _ENV["intensity_source"]
        elif origin == "file":
            field = f"intensity.source in {self.config_file}"
        else:
            field = "intensity_source"
        from carbonpipe.intensity.file import check_file_source

        check_file_source(path.strip(), field=field, options=self.intensity)

    def pue_for(self, provider: str | None, region: str | None) -> tuple[float, dict[str, Any]]:
        """The PUE for a step there and its ``pue_source``: a configured ``pue`` wins, else the
        region's published figure, the provider's fleet figure, or 1.0 on premises."""
        from carbonpipe.hardware.pue import resolve_pue

        return resolve_pue(provider, region, self.pue if "pue" in self.sources else None)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings with their sources, as ``carbonpipe config`` prints them."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            if name in ("sources", "budgets"):
                continue
            out[name] = {"value": getattr(self, name), "source": self.sources.get(name, "default")}
        if "pue" not in self.sources:  # not one figure: each step gets its place's (pue_for)
            out["pue"] = {
                "value": "by place",
                "source": "default: the region's published PUE, else the provider's fleet "
                "figure, 1.0 off the cloud",
            }
        out["budgets"] = {
            "value": [getattr(b, "scope", str(b)) for b in self.budgets],
            "source": self.sources.get("budgets", "default"),
        }
        return out


def config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the carbon.yaml to read: argument > ``CARBONPIPE_CONFIG`` > ./carbon.yaml."""
    name = _config_name(path)
    if name is None:
        return None
    from pathlib import Path

    return Path(name)


def _config_name(path: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    # config_path without pathlib, for the checks ``carbonpipe run`` makes before anything loads.
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None and os.path.isfile(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    return path


def load_config_file(
    path: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """Read carbon.yaml into a mapping (empty when there is none)."""
    name = _config_name(path)
    if name is None or not os.path.isfile(name):
        return {}, None  # as for every step whose CARBONPIPE_CONFIG names no file: no pathlib
    from pathlib import Path

    import yaml

    from carbonpipe._safeyaml import UnsafeYAML, load_file

    p = Path(name)

    try:
        data = load_file(p) or {}
    except UnsafeYAML as exc:  # too big, not UTF-8, or an alias bomb: refused before any use
        raise ConfigError(f"{p}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of settings, got {type(data).__name__}"
        )
    return data, p


def _parse(name: str, value: Any, origin: str) -> Any:
    where = f"{name} (from {origin})"
    if name in (
        "pue",
        "measure_power_secs",
        "regression_factor",
        "store_timeout_s",
        "embodied_lifetime_years",
    ):
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where} must be a number, got {_shown(value)}") from exc
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be finite, got {_shown(value)}")
        if name == "pue" and not 1.0 <= number <= 3.0:
            raise ConfigError(
                f"{where} must be between 1.0 and 3.0 (a data-centre PUE), got {number}"
            )
        if name == "measure_power_secs" and not 0.1 <= number <= 3600:
            raise ConfigError(f"{where} must be between 0.1 and 3600 seconds, got {number}")
        if name == "store_timeout_s" and not 0 < number <= 3600:
            raise ConfigError(
                f"{where} must be more than 0 and at most 3600 seconds (the most one store "
                f"call may take, e.g. 5), got {number}"
            )
        if name == "embodied_lifetime_years" and not 0.5 <= number <= 30:
            raise ConfigError(
                f"{where} must be between 0.5 and 30 years (the hardware's lifetime, default 4), "
                f"got {number}"
            )
        if name == "regression_factor" and number <= 1.0:
            raise ConfigError(
                f"{where} must be > 1.0 (e.g. 1.2 = alert 20% above baseline), got {number}"
            )
        return number
    if name == "tracking_mode":
        mode = str(value).lower()
        if mode not in TRACKING_MODES:
            raise ConfigError(
                f"{where} must be one of {', '.join(TRACKING_MODES)}, got {_shown(value)}"
            )
        return mode
    if name == "regression":
        action = str(value).lower()
        if action not in REGRESSION_ACTIONS:
            raise ConfigError(
                f"{where} must be one of {', '.join(REGRESSION_ACTIONS)}, got {_shown(value)}"
            )
        return action
    if name == "intensity_source":
        from carbonpipe.intensity.registry import check_source_name

        source, argument = check_source_name(str(value), field=where)
        return f"{source}:{argument}" if argument else source
    if name == "instance_type":
        from carbonpipe.location.machine import INSTANCE_TYPE_RE

        text = value.strip() if isinstance(value, str) else ""
        if not INSTANCE_TYPE_RE.fullmatch(text):
            raise ConfigError(
                f"{where} must be an instance type (e.g. m6i.large, n2-standard-8, "
                f"Standard_D4s_v5), got {_shown(value)}"
            )
        return text
    if name == "store":
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"{where} must be a folder path, s3://, gs:// or az:// URI, got {_shown(value)}"
            )
        return value.strip()
    if name == "kepler_prometheus_url":
        return _prometheus_url(value, where)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {type(value).__name__}")
    return value


# ``esg:`` (organisation, boundary, team sizes, targets) is read by carbonpipe.esg.aggregation itself.
_FILE_KEYS = (set(_ENV) - {"intensity_source", "kepler_prometheus_url"}) | {
    "location",
    "budgets",
    "esg",
    "intensity",
    "measure",
}


_LOCATION_KEYS = ("provider", "region", "country")


def resolve_settings(
    *, config_file: str | os.PathLike[str] | None = None, **arguments: Any
) -> Settings:
    """Resolve every setting: keyword arguments > ``CARBONPIPE_*`` env vars > carbon.yaml.

    Arguments that are ``None`` count as not given.
    """
    unknown = set(arguments) - set(_ENV)
    if unknown:
        raise TypeError(f"unknown setting(s) {sorted(unknown)}; accepted: {sorted(_ENV)}")
    data, path = load_config_file(config_file)
    bad = set(data) - _FILE_KEYS
    if bad:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(bad)}; accepted keys: {sorted(_FILE_KEYS)}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if data.get("intensity") is not None:
        if isinstance(data["intensity"], dict) and data["intensity"].get("source") is not None:
            data = {**data, "intensity_source": data["intensity"]["source"]}
        values["intensity"] = _intensity_options(data["intensity"], path)
        sources["intensity"] = "file"
    if os.environ.get("CARBONPIPE_INTENSITY_ZONE"):
        values["intensity"] = {
            **values.get("intensity", {}),
            "zone": os.environ["CARBONPIPE_INTENSITY_ZONE"],
        }
        sources["intensity"] = "env"
    if data.get("measure") is not None:
        url = _measure_options(data["measure"], path)
        data = {k: v for k, v in data.items() if k != "kepler_prometheus_url"}
        if url is not None:
            data["kepler_prometheus_url"] = url
    for name, env in _ENV.items():
        if arguments.get(name) is not None:
            values[name] = _parse(name, arguments[name], "argument")
            sources[name] = "argument"
        elif os.environ.get(env):
            values[name] = _parse(name, os.environ[env], env)
            sources[name] = "env"
        elif data.get(name) is not None:
            origin = f"{path} intensity.source" if name == "intensity_source" else f"{path}"
            values[name] = _parse(name, data[name], origin)
            sources[name] = "file"
    location = data.get("location") or {}
    if not isinstance(location, dict):
        raise ConfigError(f"{path}: location must be a mapping {{provider, region, country}}")
    extra = set(location) - {"provider", "region", "country"}
    if extra:
        raise ConfigError(
            f"{path}: location has unknown key(s) {sorted(extra)}; use provider, region, country"
        )
    from carbonpipe.location.validate import check_location

    p, r, c = (None if location.get(k) is None else str(location[k]) for k in _LOCATION_KEYS)
    names = (f"{path} location.provider", f"{path} location.region", f"{path} location.country")
    check_location(p, r, c, names=names)
    for key in _LOCATION_KEYS:
        if location.get(key) is not None:
            values[f"default_{key}"] = str(location[key])
            sources[f"default_{key}"] = "file"
    if data.get("budgets") is not None:
        from carbonpipe.budgets.budget import load_budgets

        try:
            values["budgets"] = tuple(load_budgets(data))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        sources["budgets"] = "file"
    values.setdefault("project", "default")
    if not values.get("pipeline"):
        values["pipeline"] = values["project"]
        sources["pipeline"] = "project"
    return Settings(**values, config_file=str(path) if path else None, sources=sources)
