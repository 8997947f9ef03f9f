"""Cloud provider names and the constants location detection shares (they import only ``re``).

``carbonpipe run`` checks ``--provider`` before it starts the command; the metadata probes
(:mod:`carbonpipe.location.imds`) and the precedence (:mod:`carbonpipe.location.detect`) both
read the constants here, so neither imports the other for them.
"""

from __future__ import annotations

import re

PROVIDERS: tuple[str, ...] = ("gcp", "aws", "azure")
DETECTED_BY: tuple[str, ...] = ("argument", "env", "metadata", "default", "world")
CACHE_TTL_S = 600.0
MAX_BODY_BYTES = 4096
DEFAULT_DEADLINE_S = 0.06

ENV_PROVIDER = "CARBONPIPE_CLOUD_PROVIDER"
ENV_REGION = "CARBONPIPE_CLOUD_REGION"
ENV_INSTANCE_TYPE = "CARBONPIPE_INSTANCE_TYPE"
ENV_COUNTRY = "CARBONPIPE_COUNTRY"
ENV_DETECTION = "CARBONPIPE_CLOUD_DETECTION"
ENV_DMI_DIR = "CARBONPIPE_DMI_DIR"
ENV_CACHE_DIR = "CARBONPIPE_CACHE_DIR"
ENV_AZURE_ENDPOINT = "CARBONPIPE_AZURE_IMDS_ENDPOINT"


# The three providers' region names have disjoint shapes, so a region alone names its provider.
REGION_RE = {
    "gcp": re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}"),  # europe-west1
    "aws": re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-[0-9]{1,2}"),  # eu-west-1, us-gov-west-1
    "azure": re.compile(r"[a-z][a-z0-9]{2,39}"),  # westeurope, eastus2
}
REGION_EXAMPLE = {"gcp": "europe-west1", "aws": "eu-west-1", "azure": "westeurope"}


_ALIASES = {
    "gcp": "gcp",
    "google": "gcp",
    "gce": "gcp",
    "aws": "aws",
    "amazon": "aws",
    "ec2": "aws",
    "azure": "azure",
    "microsoft": "azure",
}


def normalize_provider(value: str, *, name: str = "provider") -> str:
    """Return ``"gcp"``, ``"aws"`` or ``"azure"`` for a provider name or alias, else ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    provider = _ALIASES.get(value.strip().lower())
    if provider is None:
        raise ValueError(
            f"{name}={value!r} is not a cloud provider; use 'gcp', 'aws' or 'azure' "
            "(aliases 'google', 'amazon', 'microsoft')"
        )
    return provider
