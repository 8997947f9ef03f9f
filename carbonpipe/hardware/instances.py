"""Cloud instance types: vCPUs, GPUs, their family's largest size and the host's embodied emissions.

The table is ``data/instances.csv`` (one row per provider and type, each with its method,
source key and vintage); ``data/sources.csv`` names each source. Azure sizes are matched the
way the metadata server spells them (``Standard_D2s_v3``) or the way the price list does
(``D2s v3``); AWS and GCP types are matched case-insensitively.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from carbonpipe.hardware._data import rows, source_name, sources

__all__ = [
    "INSTANCE_TYPE_RE",
    "InstanceSpec",
    "instance_types",
    "lookup_instance",
    "normalize_type",
    "source_name",
    "sources",
]

#: The metadata servers' instance type, as a pattern: letters, digits and ``._- `` only.
INSTANCE_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,79}")


@dataclass(frozen=True)
class InstanceSpec:
    """One instance type of one provider, as the table has it."""

    provider: str
    instance_type: str
    family: str
    vcpus: int
    gpus: int
    family_vcpus: int
    family_gpus: int
    embodied_kg_co2e: float
    method: str  # "ccf" (Cloud Carbon Footprint's coefficients) or "estimated" (default model)
    source: str  # the source's full name (data/sources.csv)
    vintage: str


def normalize_type(provider: str, instance_type: str) -> str:
    """The table's key for a type: lower case; for Azure without ``Standard_``, spaces or ``_``."""
    text = instance_type.strip().lower()
    if provider == "azure":
        text = re.sub(r"^(standard|basic)_", "", text)
        text = re.sub(r"[\s_]+", "", text)
    return text


@functools.cache
def _table() -> dict[tuple[str, str], InstanceSpec]:
    table: dict[tuple[str, str], InstanceSpec] = {}
    for r in rows("instances.csv"):
        spec = InstanceSpec(
            provider=r["provider"],
            instance_type=r["instance_type"],
            family=r["family"],
            vcpus=int(r["vcpus"]),
            gpus=int(r["gpus"]),
            family_vcpus=int(r["family_vcpus"]),
            family_gpus=int(r["family_gpus"]),
            embodied_kg_co2e=float(r["embodied_kg_co2e"]),
            method=r["method"],
            source=source_name(r["source"]),
            vintage=r["vintage"],
        )
        table.setdefault((spec.provider, normalize_type(spec.provider, spec.instance_type)), spec)
    return table


def lookup_instance(provider: str | None, instance_type: str | None) -> InstanceSpec | None:
    """The table's row for this provider's type, or None when either is unknown."""
    if not provider or not instance_type:
        return None
    return _table().get((provider, normalize_type(provider, instance_type)))


def instance_types(provider: str) -> list[str]:
    """Every type the table knows for ``provider``, as the table spells them."""
    return sorted(s.instance_type for (p, _), s in _table().items() if p == provider)
