"""Where a step runs (cloud provider, region, country), found within 60 ms and without raising.

Sources, the first that knows wins, and ``Location.detected_by`` says which:
explicit arguments > ``CARBONPIPE_CLOUD_PROVIDER`` / ``CARBONPIPE_CLOUD_REGION`` /
``CARBONPIPE_COUNTRY`` > the cloud's metadata server > configured defaults > world average.

Metadata detection looks before it leaps, as cloud-init does: the DMI strings in
``/sys/class/dmi/id`` name the cloud without any network traffic, so a laptop or an on-prem box
never sends a packet. Only a cloud named by DMI is probed; when DMI cannot be read (containers
without sysfs, macOS) all three providers are probed at once, on non-blocking sockets driven by
one ``selectors`` loop under one overall deadline (CodeCarbon tries them one after another with
a one-second timeout each). Answers are checked, never trusted: HTTP status, the provider's
marker headers, a strict pattern for every region, a 4 KiB body cap, no redirects followed.
A definite answer is cached in the process and on disk for ten minutes.

Endpoints honour the SDKs' own variables: ``GCE_METADATA_HOST`` (or ``GCE_METADATA_ROOT``,
``GCE_METADATA_IP``) like google-auth, ``AWS_EC2_METADATA_SERVICE_ENDPOINT``,
``AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`` and ``AWS_EC2_METADATA_DISABLED`` like botocore, and
``CARBONPIPE_AZURE_IMDS_ENDPOINT``. ``CARBONPIPE_CLOUD_DETECTION=off`` switches probing off.
AWS is asked through IMDSv2 only (a session token first); the token-less v1 path is never used.
The probes live in :mod:`carbonpipe.location.imds`, imported only when a probe may run: a location named
by argument or environment costs a tracked step no socket code at all.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace

from carbonpipe.errors import ConfigError
from carbonpipe.location.countries import normalize_country
from carbonpipe.location.providers import (
    CACHE_TTL_S,
    DEFAULT_DEADLINE_S,
    DETECTED_BY,
    ENV_COUNTRY,
    ENV_INSTANCE_TYPE,
    ENV_PROVIDER,
    ENV_REGION,
    MAX_BODY_BYTES,
    PROVIDERS,
    normalize_provider,
)

__all__ = [
    "CACHE_TTL_S",
    "DETECTED_BY",
    "MAX_BODY_BYTES",
    "PROVIDERS",
    "Location",
    "clear_cache",
    "detect_location",
    "normalize_country",
    "normalize_provider",
]


@dataclass(frozen=True)
class Location:
    """Where a step ran, which source said so, and what detection ran into on the way."""

    provider: str | None
    region: str | None
    country_iso: str | None
    detected_by: str
    elapsed_ms: float
    zone: str | None = None
    notes: tuple[str, ...] = ()
    #: What the step runs on (``m6i.large``), and who said so (:data:`INSTANCE_TYPE_BY`).
    instance_type: str | None = None
    instance_type_by: str | None = None

    def __post_init__(self) -> None:
        if self.detected_by not in DETECTED_BY:
            raise ValueError(f"detected_by must be one of {DETECTED_BY}, got {self.detected_by!r}")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS} or None, got {self.provider!r}")

    def to_dict(self) -> dict[str, object]:
        """Return the location as plain JSON-ready values."""
        return {
            "provider": self.provider,
            "region": self.region,
            "country_iso": self.country_iso,
            "detected_by": self.detected_by,
            "elapsed_ms": self.elapsed_ms,
            "zone": self.zone,
            "notes": list(self.notes),
            "instance_type": self.instance_type,
            "instance_type_by": self.instance_type_by,
        }


def detect_location(
    *,
    provider: str | None = None,
    region: str | None = None,
    country_iso: str | None = None,
    default_provider: str | None = None,
    default_region: str | None = None,
    default_country: str | None = None,
    use_cache: bool = True,
    deadline_s: float = DEFAULT_DEADLINE_S,
    dmi_dir: str | None = None,
    probe: bool = True,
    instance_type: str | None = None,
    instance_type_by: str = "argument",
) -> Location:
    """Find where this process runs; network trouble becomes a fallback and a note, never an error.

    Args:
        provider: The cloud, when known (``"gcp"``, ``"aws"``, ``"azure"`` or an alias).
        region: The provider's region; alone, its shape names the provider.
        country_iso: ISO 3166-1 alpha-2 or alpha-3 country, for runs off the cloud.
        default_provider: Provider to use when nothing above and no metadata server knows.
        default_region: Region to use in that case.
        default_country: Country to use in that case.
        use_cache: Read and write the process and disk caches of metadata answers.
        deadline_s: Overall time allowed for metadata detection, DMI reads included.
        dmi_dir: Folder of DMI strings; defaults to ``CARBONPIPE_DMI_DIR``, then sysfs.
        probe: ``False`` never contacts a metadata server (offline tracking).
        instance_type: What the step runs on, when known; else ``CARBONPIPE_INSTANCE_TYPE``,
            else what the metadata server (or an AWS Nitro DMI) says.
        instance_type_by: Who gave ``instance_type``: ``argument``, ``env`` or ``config``.

    Returns:
        The location, with ``detected_by`` naming the source that settled it.

    Raises:
        ValueError: An argument is not a provider, region or country (it is named).
        ConfigError: A ``CARBONPIPE_*`` variable is invalid (it is named).
    """
    started = time.perf_counter()
    if (
        isinstance(deadline_s, bool)
        or not isinstance(deadline_s, (int, float))
        or not 0 < deadline_s < math.inf
    ):
        raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}")
    deadline_at = started + float(deadline_s)
    levels = [
        _claim("argument", provider, region, country_iso, ("provider", "region", "country_iso")),
        _claim(
            "env",
            os.environ.get(ENV_PROVIDER) or None,
            os.environ.get(ENV_REGION) or None,
            os.environ.get(ENV_COUNTRY) or None,
            (ENV_PROVIDER, ENV_REGION, ENV_COUNTRY),
            error=ConfigError,
        ),
    ]
    default = _claim(
        "default",
        default_provider,
        default_region,
        default_country,
        ("default_provider", "default_region", "default_country"),
    )
    notes: list[str] = []
    itype, itype_by = _given_instance_type(instance_type, instance_type_by)
    # A region or country given by the user settles the location: no packet is worth sending.
    if probe and not any(c.region or c.country for c in levels):
        hint = next((c.provider for c in levels if c.provider), None)
        from carbonpipe.location.imds import metadata  # the probes load only when they may run

        meta = metadata(hint, use_cache=use_cache, deadline_at=deadline_at, dmi_dir=dmi_dir)
        notes.extend(meta.notes)
        if meta.provider is not None:
            levels.append(_Claim("metadata", meta.provider, meta.region, None, meta.zone))
        if itype is None and meta.instance_type is not None:
            itype, itype_by = meta.instance_type, meta.instance_type_by
    levels.append(default)
    found = _settle(levels, notes, started)
    if itype is None:
        return found
    return replace(found, instance_type=itype, instance_type_by=itype_by)


def _given_instance_type(value: str | None, by: str) -> tuple[str | None, str | None]:
    """The instance type given by argument (or configuration), else by the environment."""
    name = f"instance_type ({by})"
    if value is None and os.environ.get(ENV_INSTANCE_TYPE, "").strip():
        value, by, name = os.environ[ENV_INSTANCE_TYPE], "env", ENV_INSTANCE_TYPE
    if value is None:
        return None, None
    from carbonpipe.location.machine import INSTANCE_TYPE_BY, INSTANCE_TYPE_RE

    if by not in INSTANCE_TYPE_BY:
        raise ValueError(f"instance_type_by must be one of {INSTANCE_TYPE_BY}, got {by!r}")
    text = value.strip() if isinstance(value, str) else ""
    if not INSTANCE_TYPE_RE.fullmatch(text):
        error = ConfigError if by == "env" else ValueError
        raise error(
            f"{name}={value!r} is not an instance type (e.g. 'm6i.large', 'n2-standard-8', "
            "'Standard_D4s_v5')"
        )
    return text, by


def clear_cache(*, disk: bool = True) -> None:
    """Forget cached metadata answers: this process's, and with ``disk`` those on disk too."""
    from carbonpipe.location.imds import clear_cache as clear_probe_cache

    clear_probe_cache(disk=disk)


# -- precedence ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    """What one source says; a region always carries its provider."""

    source: str
    provider: str | None = None
    region: str | None = None
    country: str | None = None
    zone: str | None = None


def _claim(
    source: str,
    provider: str | None,
    region: str | None,
    country: str | None,
    names: tuple[str, str, str],
    *,
    error: type[ValueError] = ValueError,
) -> _Claim:
    """Validate and normalise one source's values, naming the argument or variable at fault."""
    from carbonpipe.location.validate import check_provider, check_region

    r = None
    try:
        p = None if provider is None else check_provider(provider, name=names[0])
        c = None if country is None else normalize_country(country, name=names[2])
        if region is not None:  # a region of the table, or refused with the nearest names
            p, r = check_region(p, region, name=names[1])
    except ValueError as exc:
        if error is ValueError or isinstance(exc, error):
            raise
        raise error(str(exc)) from None
    return _Claim(source, p, r, c)


def _settle(levels: list[_Claim], notes: list[str], started: float) -> Location:
    """Apply precedence field by field and say which source settled the location."""
    by_provider = next((c for c in levels if c.provider), None)
    provider = by_provider.provider if by_provider else None
    by_region = next((c for c in levels if c.region and c.provider == provider), None)
    for c in levels:
        if c is by_region:
            break
        if c.region:  # outranked the region we use, yet belongs to another provider
            notes.append(
                f"{c.source} region {c.region!r} ignored: it is {c.provider}'s, not {provider}'s"
            )
    country: str | None = None
    by_country: _Claim | None = None
    for c in levels:
        if c.country:
            country, by_country = c.country, c
            break
        if c is by_region:
            # The region fixes the country; a lower source's country would be for somewhere else.
            country = _country_for_region(provider, c.region, notes)
            by_country = c if country else None
            break
    settled = by_region or by_country or by_provider
    return Location(
        provider=provider,
        region=by_region.region if by_region else None,
        country_iso=country,
        detected_by=settled.source if settled else "world",
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
        zone=by_region.zone if by_region else None,
        notes=tuple(notes),
    )


def _country_for_region(provider: str | None, region: str | None, notes: list[str]) -> str | None:
    """Ask the intensity tables which country hosts the region, if that module is there yet."""
    if provider is None or region is None:
        return None
    try:
        from carbonpipe.intensity.table import country_for_region
    except (ImportError, AttributeError):
        return None
    try:
        found = country_for_region(provider, region)
    except (LookupError, ValueError, OSError) as exc:
        notes.append(f"country of {provider} {region} unknown: {exc}")
        return None
    if found is None:  # only a detected region can be unknown: a given one was refused
        from carbonpipe.location.validate import unknown_region_country, unknown_region_note

        found = unknown_region_country(provider, region)
        notes.append(unknown_region_note(provider, region, found))
        if found is None:
            return None
    try:
        return normalize_country(found)
    except (TypeError, ValueError):
        notes.append(f"country of {provider} {region} unusable: {found!r}")
        return None
