"""What the step runs on: the instance type, asked in the same metadata pass as the region.

Each provider's documented path: GCE ``instance/machine-type`` (``projects/N/machineTypes/T``),
EC2 IMDSv2 ``meta-data/instance-type`` (with the session token the region was asked with),
Azure IMDS ``compute/vmSize``. The probes in :mod:`carbonpipe.location.imds` ask it once the
region is known, under the same deadline; an instance type that does not come back in time, or
comes back malformed, leaves the region as found and adds a note. On an AWS Nitro instance the
DMI ``product_name`` is the instance type too, and is read when no metadata server answered.

Precedence, as for the location: ``instance_type=`` > ``CARBONPIPE_INSTANCE_TYPE`` >
carbon.yaml ``instance_type`` > metadata > DMI; ``instance_type_by`` says which.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from carbonpipe.location.http import _Endpoint, _Request, _Response, _show

#: An instance type as the metadata servers spell them: ``m6i.large``, ``n2-standard-8``,
#: ``Standard_ND96isr_H100_v5``.
INSTANCE_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_GCP_MACHINE_TYPE_RE = re.compile(r"projects/[0-9]+/machineTypes/([a-z0-9][a-z0-9-]{0,62})")
#: Who said what the instance type is.
INSTANCE_TYPE_BY = ("argument", "env", "config", "metadata", "dmi")


def instance_type_request(provider: str, ep: _Endpoint, token: str | None = None) -> _Request:
    """The request for ``provider``'s instance type (AWS: with the IMDSv2 session token)."""
    if provider == "gcp":
        path = f"{ep.prefix}/computeMetadata/v1/instance/machine-type"
        return _Request("GET", path, (("Metadata-Flavor", "Google"),))
    if provider == "aws":
        path = f"{ep.prefix}/latest/meta-data/instance-type"
        return _Request("GET", path, (("X-aws-ec2-metadata-token", token or ""),))
    path = f"{ep.prefix}/metadata/instance/compute/vmSize?api-version=2021-02-01&format=text"
    return _Request("GET", path, (("Metadata", "true"),))


def read_instance_type(provider: str, resp: _Response) -> tuple[str | None, str]:
    """The instance type in ``resp``, or None and a note saying why not."""
    if resp.status != 200:
        return None, f"{provider}: instance type: HTTP {resp.status}"
    kind = resp.headers.get("content-type", "text/plain").lower()
    if "html" in kind or resp.body.lstrip()[:1] == b"<":
        return None, f"{provider}: instance type: HTML answer rejected: {_show(resp.body)}"
    if provider == "gcp" and resp.headers.get("metadata-flavor") != "Google":
        return None, "gcp: instance type: answer lacks the 'Metadata-Flavor: Google' header"
    try:
        text = resp.body.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    if provider == "gcp":
        m = _GCP_MACHINE_TYPE_RE.fullmatch(text)
        text = m.group(1) if m else ""
    if not INSTANCE_TYPE_RE.fullmatch(text):
        return None, f"{provider}: instance type rejected: {_show(resp.body)}"
    return text, ""


def dmi_instance_type(dmi: Mapping[str, str] | None) -> str | None:
    """An AWS Nitro instance's type from DMI (``product_name``), else None."""
    if not dmi or not dmi.get("sys_vendor", "").startswith("Amazon EC2"):
        return None
    name = dmi.get("product_name", "")
    # Nitro names the type (m6i.large); bare metal and Xen hosts say something else.
    return name if re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9-]+", name) else None
