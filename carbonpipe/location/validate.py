"""Refuse a given location that would price a step at a number nobody meant.

A provider or region given by argument, ``CARBONPIPE_*`` variable or carbon.yaml must name a
provider, and a region of that provider in the intensity table (:mod:`carbonpipe.intensity.table`);
anything else is a :class:`~carbonpipe.errors.ConfigError` (a ``ValueError``) naming the field
and the nearest names, raised before the step runs. A region the *metadata server* reports is
never refused (the step must run): :func:`unknown_region_country` guesses its country from its
name and :func:`unknown_region_note` says, in the record's ``tracking_errors``, what priced it.
"""

from __future__ import annotations

import os
import re

from carbonpipe.errors import ConfigError
from carbonpipe.location.providers import (
    ENV_COUNTRY,
    ENV_PROVIDER,
    ENV_REGION,
    PROVIDERS,
    REGION_EXAMPLE,
    REGION_RE,
    normalize_provider,
)

__all__ = [
    "check_given_location",
    "check_location",
    "check_provider",
    "check_region",
    "known_regions",
    "unknown_region_country",
    "unknown_region_note",
]

_PROVIDER_SPELLINGS = ("gcp", "aws", "azure", "google", "amazon", "microsoft")
# What an Azure region name says beyond its country: "germanywestcentral" -> "germany".
_AZURE_POINTS = re.compile(r"north|south|east|west|central|\d+")
_MAX_SUGGESTIONS = 3


def known_regions(provider: str | None = None) -> dict[str, str]:
    """Region -> provider for the regions in the intensity table, of one provider or all."""
    from carbonpipe.intensity.names import region_names  # light: no csv, no dataclasses

    return {r: p for r, p in region_names().items() if provider in (None, p)}


def check_provider(value: str, *, name: str) -> str:
    """Return the provider a name or alias stands for, else ConfigError with the nearest name."""
    try:
        return normalize_provider(value, name=name)
    except ValueError as exc:
        import difflib

        close = difflib.get_close_matches(
            value.strip().lower(), _PROVIDER_SPELLINGS, n=1, cutoff=0.5
        )
        hint = f"; did you mean {normalize_provider(close[0])}?" if close else ""
        raise ConfigError(f"{exc}{hint}") from None


def check_region(provider: str | None, value: str, *, name: str) -> tuple[str, str]:
    """Return ``(provider, region)`` for a region of the table, else ConfigError naming ``name``.

    Without a provider the region's own name must say whose it is.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    region = value.strip().lower()
    everywhere = known_regions()
    owner = everywhere.get(region)
    if provider is None and owner is not None:
        return owner, region
    if provider is not None and owner == provider:
        return provider, region
    if provider is not None and owner is not None:
        raise ConfigError(
            f"{name}={value!r} is not a region of {provider}: it is {owner}'s; give provider "
            f"{owner}, or a region of {provider} (e.g. {REGION_EXAMPLE[provider]!r})"
        )
    import difflib

    # Unknown: suggest from the provider's regions, or those of the provider its shape names.
    shaped = [p for p in PROVIDERS if REGION_RE[p].fullmatch(region)]
    scope = provider or (shaped[0] if len(shaped) == 1 else None)
    candidates = known_regions(scope) if scope else everywhere
    close = difflib.get_close_matches(region, candidates, n=_MAX_SUGGESTIONS, cutoff=0.6)
    if scope is None and not close:
        close = difflib.get_close_matches(region, everywhere, n=_MAX_SUGGESTIONS, cutoff=0.6)
    whose = provider or "gcp, aws or azure"
    message = f"{name}={value!r} is not a region of {whose} in carbonpipe's region table"
    if close:
        best, others = close[0], close[1:]
        label = best if provider else f"{best} ({everywhere[best]})"
        message += f"; did you mean {label}?"
        if others:
            message += f" (also close: {', '.join(others)})"
    else:
        examples = ", ".join(repr(REGION_EXAMPLE[p]) for p in ((scope,) if scope else PROVIDERS))
        message += f" (e.g. {examples})"
    raise ConfigError(message)


def check_location(
    provider: str | None, region: str | None, country: str | None, *, names: tuple[str, str, str]
) -> None:
    """Refuse one source's provider, region or country, naming the field (``names``) at fault."""
    p = None if provider is None else check_provider(provider, name=names[0])
    if country is not None:
        from carbonpipe.location.countries import normalize_country

        try:
            normalize_country(country, name=names[2])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if region is not None:
        check_region(p, region, name=names[1])


def check_given_location(
    argument: tuple[str | None, str | None, str | None], names: tuple[str, str, str]
) -> None:
    """Refuse a bad location given by argument (named by ``names``) or ``CARBONPIPE_*`` variable.

    Every given source is checked, not only the one that wins: a typo is a typo wherever it is.
    carbon.yaml's ``location:`` is checked where the file is read.
    """
    check_location(*argument, names=names)
    env = (ENV_PROVIDER, ENV_REGION, ENV_COUNTRY)
    given = [os.environ.get(variable) or None for variable in env]
    check_location(given[0], given[1], given[2], names=env)


def unknown_region_country(provider: str, region: str) -> str | None:
    """Guess the ISO alpha-3 country of a region the table lacks, from its name's family.

    The family is the name less its number (``us-east7`` -> ``us-east``; ``eu-south-3`` ->
    ``eu-south``), or for Azure less its compass points (``germanycentral`` -> ``germany``). When
    every region of that family in the table is in one country, that is the guess; else None.
    """
    family = _family(provider, region)
    if not family:
        return None
    from carbonpipe.intensity.table import regions

    countries = {r.country_iso for r in regions(provider) if _family(provider, r.region) == family}
    return countries.pop() if len(countries) == 1 else None


def unknown_region_note(provider: str, region: str, country: str | None) -> str:
    """The ``tracking_errors`` line for a detected region the table lacks."""
    priced = (
        f"priced at the grid average of {country}, the country its name points to"
        if country
        else "its country is unknown, so it is priced at the world average"
    )
    return f"metadata region {region!r} of {provider} is not in carbonpipe's region table; {priced}"


def _family(provider: str, region: str) -> str:
    if provider == "azure":
        return _AZURE_POINTS.sub("", region)
    if provider == "aws":
        return re.sub(r"-\d+$", "", region)
    return region.rstrip("0123456789")
