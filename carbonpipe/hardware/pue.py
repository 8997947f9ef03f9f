"""The data centre's PUE per place: the user's figure, else the region's, else the provider's fleet.

``data/pue.csv``: the providers' published regional figures (Google per campus, AWS and Azure
per region, as the Green Software Foundation's Real Time Cloud dataset gathers them) and each
provider's fleet figure (region ``*``), with year and source key (``data/sources.csv``).
On premises (no cloud provider) the PUE is 1.0 unless configured: nothing is known about the
building, and the record's ``pue_source`` says so.
"""

from __future__ import annotations

import functools
from typing import Any

#: PUE off the cloud when none is configured.
ON_PREMISES_PUE = 1.0


@functools.cache
def _table() -> dict[tuple[str, str], tuple[float, str, str]]:
    from carbonpipe.hardware._data import rows, source_name

    return {
        (r["provider"], r["region"]): (float(r["pue"]), r["year"], source_name(r["source"]))
        for r in rows("pue.csv")
    }


def resolve_pue(
    provider: str | None, region: str | None, user_pue: float | None = None
) -> tuple[float, dict[str, Any]]:
    """The PUE to apply and the record's ``pue_source`` ``{kind, name, vintage}``.

    ``user_pue`` (set by argument, ``CARBONPIPE_PUE`` or carbon.yaml) always wins.
    """
    if user_pue is not None:
        return float(user_pue), {"kind": "user", "name": "configured pue", "vintage": None}
    table = _table()
    if provider is not None:
        found = table.get((provider, region or ""))
        if found is not None:
            return found[0], {"kind": "region", "name": found[2], "vintage": found[1]}
        fleet = table.get((provider, "*"))
        if fleet is not None:
            return fleet[0], {"kind": "fleet", "name": fleet[2], "vintage": fleet[1]}
    name = "on premises: 1.0 (no facility overhead counted; set pue to count it)"
    return ON_PREMISES_PUE, {"kind": "on_premises", "name": name, "vintage": None}
