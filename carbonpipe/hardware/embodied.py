"""The embodied emissions share of a step, SCI's ``M = TE x (TiR / EL) x (RR / ToR)``.

``TE``: the host's embodied (manufacturing) emissions, from the instance type's row of
``data/instances.csv`` (Cloud Carbon Footprint's coefficients), else the default model;
``TiR``: the step's duration; ``EL``: the hardware's lifetime (4 years by default, as Cloud Carbon
Footprint and Teads); ``RR / ToR``: the step's resource share of the host (:func:`share`).

The default model, Cloud Carbon Footprint's and the Impact Framework's SciEmbodied: a
1,000 kg CO2e base server, plus 100 kg per CPU socket and 150 kg per GPU. It prices a type the
table lacks (sockets and GPUs of the machine the step sees) and a machine off the cloud; such a
figure is labelled ``estimated``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: EL, the hardware's expected lifetime (years) when nothing else is configured.
DEFAULT_LIFETIME_YEARS = 4.0
#: The default model: a base server, plus each CPU socket and each GPU (kg CO2e).
BASE_SERVER_KG = 1000.0
PER_SOCKET_KG = 100.0
PER_GPU_KG = 150.0
DEFAULT_MODEL_SOURCE = (
    "default model (1000 kg CO2e base server + 100 kg per CPU socket + 150 kg per GPU), "
    "as Cloud Carbon Footprint and the Impact Framework's SciEmbodied"
)
DEFAULT_MODEL_VINTAGE = "2021"  # Cloud Carbon Footprint's embodied emissions method, Dec 2021
_SECONDS_PER_YEAR = 365.25 * 86400.0


def default_model_kg(sockets: int, gpus: int) -> float:
    """TE of a server with ``sockets`` CPU sockets and ``gpus`` GPUs, by the default model."""
    return BASE_SERVER_KG + PER_SOCKET_KG * max(sockets, 1) + PER_GPU_KG * max(gpus, 0)


def share(
    cpus: float | None,
    gpus: int | None,
    *,
    instance_vcpus: int,
    instance_gpus: int,
    family_vcpus: int,
    family_gpus: int,
) -> float:
    """RR / ToR: the vCPUs the step could use over its family's largest size's.

    ``cpus`` None means the whole instance; a limit above the instance's vCPUs counts as the
    instance. On a GPU family the share is the larger of that and the GPUs the step could see
    (``gpus``; None means the instance's) over the largest size's GPUs.
    """
    rr = float(instance_vcpus) if cpus is None else min(float(cpus), float(instance_vcpus))
    cpu_share = rr / family_vcpus if family_vcpus > 0 else 1.0
    result = cpu_share
    if family_gpus > 0:
        seen = instance_gpus if gpus is None else min(gpus, instance_gpus)
        result = max(cpu_share, seen / family_gpus)
    return min(max(result, 0.0), 1.0)


def embodied_figure(
    *,
    provider: str | None,
    instance_type: str | None,
    instance_type_by: str | None,
    duration_s: float,
    resources: Mapping[str, Any],
    lifetime_years: float = DEFAULT_LIFETIME_YEARS,
) -> tuple[float, dict[str, Any]]:
    """The step's embodied kg CO2e and the record's ``embodied`` block.

    Args:
        provider: The cloud (None off the cloud).
        instance_type: What the step ran on, when known.
        instance_type_by: Who said so (``argument``, ``env``, ``config``, ``metadata``, ``dmi``).
        duration_s: TiR, the step's duration.
        resources: What the step could use and the machine it saw
            (:func:`carbonpipe.measure.resources.step_resources`): ``cpus`` (None: the whole
            instance), ``gpus`` (None: the instance's), ``host_cpus``, ``host_gpus``,
            ``sockets``.
        lifetime_years: EL.
    """
    cpus = resources.get("cpus")
    gpus = resources.get("gpus")
    host_cpus = int(resources.get("host_cpus") or 1)
    host_gpus = int(resources.get("host_gpus") or 0)
    spec = None
    if provider and instance_type:  # the table (and its module) only when there is a type
        from carbonpipe.hardware.instances import lookup_instance

        spec = lookup_instance(provider, instance_type)
    note: str | None = None
    if spec is not None:
        te = spec.embodied_kg_co2e
        method, source, vintage = spec.method, spec.source, spec.vintage
        rr_tor = share(
            cpus,
            gpus,
            instance_vcpus=spec.vcpus,
            instance_gpus=spec.gpus,
            family_vcpus=spec.family_vcpus,
            family_gpus=spec.family_gpus,
        )
    else:
        seen_gpus = host_gpus if gpus is None else gpus
        te = default_model_kg(int(resources.get("sockets") or 1), max(seen_gpus, host_gpus))
        method, source, vintage = "estimated", DEFAULT_MODEL_SOURCE, DEFAULT_MODEL_VINTAGE
        # Without the family's largest size, the machine the step sees stands for the host.
        rr_tor = share(
            cpus,
            gpus,
            instance_vcpus=host_cpus,
            instance_gpus=host_gpus,
            family_vcpus=host_cpus,
            family_gpus=host_gpus,
        )
        if instance_type:
            note = (
                f"instance type {instance_type!r} is not in the embodied table: the default "
                "model on the machine the step saw, which stands for its host"
            )
        elif provider:
            note = "instance type unknown: the default model on the machine the step saw"
        else:
            note = "off the cloud: the default model on this machine"
    kg = te * (max(duration_s, 0.0) / (lifetime_years * _SECONDS_PER_YEAR)) * rr_tor
    block = {
        "method": method,
        "source": source,
        "vintage": vintage,
        "instance_type": instance_type,
        "instance_type_by": instance_type_by if instance_type else None,
        "share": rr_tor,
        "lifetime_years": float(lifetime_years),
        "host_kg_co2e": float(te),
        "note": note,
    }
    return kg, block
