"""What a step ran on and what that hardware cost to make: instance types, embodied emissions, PUE.

``instances`` (the sourced table in ``data/instances.csv``: each cloud instance type's vCPUs,
GPUs, its family's largest size and its host's embodied emissions), ``embodied`` (the SCI
embodied share ``M = TE x (TiR / EL) x (RR / ToR)`` and the default model for types the table
lacks), ``pue`` (the data centre's PUE per provider and region, in ``data/pue.csv``).
Every figure carries its source and vintage; ``data/sources.csv`` says what each source is.

May import: ``errors`` and the standard library.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "InstanceSpec": "carbonpipe.hardware.instances",
    "lookup_instance": "carbonpipe.hardware.instances",
    "embodied_figure": "carbonpipe.hardware.embodied",
    "default_model_kg": "carbonpipe.hardware.embodied",
    "resolve_pue": "carbonpipe.hardware.pue",
}

__all__ = [
    "InstanceSpec",
    "default_model_kg",
    "embodied_figure",
    "lookup_instance",
    "resolve_pue",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.hardware.embodied import default_model_kg, embodied_figure
    from carbonpipe.hardware.instances import InstanceSpec, lookup_instance
    from carbonpipe.hardware.pue import resolve_pue
