"""Cloud metadata servers: DMI first, then GCP, AWS (IMDSv2) and Azure probed under one deadline.

The network half of :func:`carbonpipe.location.detect.detect_location`, imported only when a probe may run:
a location given by argument, environment or configuration never loads it. The protocol is
described in :mod:`carbonpipe.location.detect`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from carbonpipe import _safejson
from carbonpipe.errors import ConfigError
from carbonpipe.location.http import (
    _encode,
    _Endpoint,
    _Exchange,
    _Failed,
    _Request,
    _Response,
    _show,
)
from carbonpipe.location.machine import (
    INSTANCE_TYPE_RE,
    dmi_instance_type,
    instance_type_request,
    read_instance_type,
)
from carbonpipe.location.providers import (
    CACHE_TTL_S,
    ENV_AZURE_ENDPOINT,
    ENV_CACHE_DIR,
    ENV_DETECTION,
    ENV_DMI_DIR,
    MAX_BODY_BYTES,
    PROVIDERS,
    REGION_RE,
)

DEFAULT_DMI_DIR = "/sys/class/dmi/id"
# The link-local address itself, not metadata.google.internal: a DNS lookup cannot be bounded
# by our deadline, and off-cloud it may take seconds to fail.
_LINK_LOCAL = "http://169.254.169.254"
_AWS_IPV6 = "http://[fd00:ec2::254]"
# Azure stamps this asset tag on every VM; Hyper-V elsewhere reports the same vendor strings.
_AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
_DMI_FILES = (
    "sys_vendor",
    "product_name",
    "bios_vendor",
    "bios_version",
    "board_asset_tag",
    "chassis_asset_tag",
)
_GCP_ZONE_PATH_RE = re.compile(r"projects/[0-9]+/zones/(([a-z]+-[a-z]+[0-9]{1,2})-[a-z0-9]{1,8})")
_AWS_TOKEN_RE = re.compile(r"[A-Za-z0-9+/=_.-]{1,1024}")
# Negative answers that may be transient (timeouts, 5xx) are kept only briefly, and only here.
_INCONCLUSIVE_TTL_S = 60.0
# Left of the deadline for closing sockets and building the result after the loop gives up.
_TEARDOWN_RESERVE_S = 0.002
_OFF_VALUES = frozenset({"off", "0", "false", "no", "disabled", "disable", "never"})
_ON_VALUES = frozenset({"", "on", "1", "true", "yes", "auto", "enabled", "enable"})


# -- metadata detection: DMI, endpoints, cache ---------------------------------------------------


@dataclass(frozen=True)
class _Metadata:
    """What the metadata servers said, and whether a negative answer is definite."""

    provider: str | None = None
    region: str | None = None
    zone: str | None = None
    notes: tuple[str, ...] = ()
    conclusive: bool = True
    instance_type: str | None = None
    instance_type_by: str | None = None  # "metadata" or "dmi"


def metadata(
    hint: str | None, *, use_cache: bool, deadline_at: float, dmi_dir: str | None
) -> _Metadata:
    """Ask the candidate providers' metadata servers, after DMI and the caches."""
    switch = os.environ.get(ENV_DETECTION, "").strip().lower()
    if switch in _OFF_VALUES:
        return _Metadata()
    if switch not in _ON_VALUES:
        raise ConfigError(f"{ENV_DETECTION}={switch!r} is not valid; use 'on' or 'off'")
    folder = dmi_dir or os.environ.get(ENV_DMI_DIR) or DEFAULT_DMI_DIR
    dmi = _read_dmi(folder)
    candidates = PROVIDERS if hint is None else (hint,)
    if dmi is not None:
        named = _providers_named_by_dmi(dmi)
        # Off the cloud, or on another cloud than the one we were told: nothing to ask.
        candidates = tuple(p for p in candidates if p in named)
        if not candidates:
            return _Metadata()
    endpoints, notes = _endpoints(candidates)
    if not endpoints:
        return _with_dmi_type(_Metadata(notes=tuple(notes)), dmi)
    key = _cache_key(endpoints)
    if use_cache:
        cached = _cache_get(key)
        if cached is not None:
            return _with_dmi_type(cached, dmi)
    result = _probe_all(endpoints, deadline_at)
    result = replace(result, notes=tuple(notes) + result.notes)
    if use_cache:
        _cache_put(key, result)
    return _with_dmi_type(result, dmi)


def _with_dmi_type(result: _Metadata, dmi: Mapping[str, str] | None) -> _Metadata:
    """The result, with the instance type from DMI when no metadata server named one."""
    if result.instance_type is not None or result.provider not in (None, "aws"):
        return result
    found = dmi_instance_type(dmi)
    return result if found is None else replace(result, instance_type=found, instance_type_by="dmi")


def _read_dmi(folder: str) -> dict[str, str] | None:
    """Return the DMI strings that could be read, or None when none could (no sysfs)."""
    values: dict[str, str] = {}
    for name in _DMI_FILES:
        try:
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                values[name] = f.read(256).strip()
        except OSError:
            continue
    return values or None


def _providers_named_by_dmi(dmi: Mapping[str, str]) -> tuple[str, ...]:
    """Return the providers these DMI strings name, as cloud-init reads them."""
    vendor = dmi.get("sys_vendor", "")
    bios = dmi.get("bios_vendor", "")
    named = []
    if vendor == "Google" or bios == "Google" or dmi.get("product_name") == "Google Compute Engine":
        named.append("gcp")
    # Nitro instances say "Amazon EC2"; older Xen ones only hide "amazon" in the BIOS version.
    if (
        vendor.startswith("Amazon")
        or bios.startswith("Amazon")
        or "amazon" in dmi.get("bios_version", "").lower()
    ):
        named.append("aws")
    if dmi.get("chassis_asset_tag") == _AZURE_ASSET_TAG:
        named.append("azure")
    return tuple(named)


def _endpoints(candidates: Iterable[str]) -> tuple[dict[str, _Endpoint], list[str]]:
    """Return each candidate's endpoint from the SDK variables, with notes on those skipped."""
    env = os.environ
    raw: dict[str, tuple[str, str]] = {}
    notes: list[str] = []
    for provider in candidates:
        if provider == "gcp":
            for var in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT", "GCE_METADATA_IP"):
                if env.get(var):
                    raw[provider] = (var, env[var])
                    break
            else:
                raw[provider] = ("default", _LINK_LOCAL)
        elif provider == "aws":
            if env.get("AWS_EC2_METADATA_DISABLED", "false").strip().lower() == "true":
                continue  # botocore's switch; the user asked for silence, so no note
            if env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"):
                raw[provider] = (
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
                )
            elif env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "").strip().lower() == "ipv6":
                raw[provider] = ("default", _AWS_IPV6)
            else:
                raw[provider] = ("default", _LINK_LOCAL)
        else:
            raw[provider] = (ENV_AZURE_ENDPOINT, env.get(ENV_AZURE_ENDPOINT) or _LINK_LOCAL)
    endpoints: dict[str, _Endpoint] = {}
    for provider, (var, value) in raw.items():
        parsed = _parse_endpoint(value)
        if isinstance(parsed, str):
            notes.append(f"{provider}: not probed, {var}={value!r} {parsed}")
        else:
            endpoints[provider] = parsed
    return endpoints, notes


def _parse_endpoint(value: str) -> _Endpoint | str:
    """Parse ``host:port`` or an ``http://`` URL; return why not as a string."""
    from urllib.parse import urlsplit

    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "is not host:port or an http:// URL"
    if parts.scheme != "http":
        return "is not http:// (TLS metadata endpoints are not supported)"
    if not parts.hostname or any(ch in parts.hostname for ch in "\r\n \t"):
        return "has no host"
    return _Endpoint(parts.hostname, port or 80, parts.path.rstrip("/"))


_CACHE: dict[str, tuple[float, _Metadata]] = {}
_CACHE_LOCK = threading.Lock()


def _cache_dir() -> str:
    """Return the per-user cache folder (``CARBONPIPE_CACHE_DIR``, else XDG, else ~/.cache)."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "carbonpipe")


def clear_cache(*, disk: bool = True) -> None:
    """Forget cached answers: this process's, and with ``disk`` the files in the cache folder."""
    with _CACHE_LOCK:
        _CACHE.clear()
    if not disk:
        return
    folder = _cache_dir()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for entry in names:
        if entry.startswith("cloud-") and entry.endswith(".json"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))


def _cache_key(endpoints: Mapping[str, _Endpoint]) -> str:
    """Key answers by what was asked where, so different servers never share an answer."""
    import hashlib

    text = "|".join(f"{p}={endpoints[p].url}" for p in sorted(endpoints))
    return hashlib.sha256(f"cloud/1|{text}".encode()).hexdigest()[:32]


def _cache_get(key: str) -> _Metadata | None:
    """Return a fresh cached answer, from this process first, then from disk."""
    now = time.monotonic()
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            del _CACHE[key]

    try:
        with open(os.path.join(_cache_dir(), f"cloud-{key}.json"), encoding="utf-8") as f:
            data = _safejson.loads(f.read(MAX_BODY_BYTES + 1), max_bytes=MAX_BODY_BYTES)
        age = time.time() - float(data["written_at"])
        provider, region, zone = data["provider"], data["region"], data["zone"]
        notes = tuple(str(n) for n in data["notes"])[:10]
        itype = data.get("instance_type")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # A tampered or stale file must not decide where we run: re-check it like a live answer.
    valid = (provider is None and region is None) or (
        provider in PROVIDERS and isinstance(region, str) and REGION_RE[provider].fullmatch(region)
    )
    if itype is not None and not (isinstance(itype, str) and INSTANCE_TYPE_RE.fullmatch(itype)):
        return None
    if not valid or not 0 <= age < CACHE_TTL_S or not (zone is None or isinstance(zone, str)):
        return None
    result = _Metadata(provider, region, zone, notes, True, itype, itype and "metadata")
    with _CACHE_LOCK:
        _CACHE[key] = (now + CACHE_TTL_S - age, result)
    return result


def _cache_put(key: str, result: _Metadata) -> None:
    """Keep a definite answer ten minutes here and on disk, a doubtful one a minute here only."""
    ttl = CACHE_TTL_S if result.conclusive else _INCONCLUSIVE_TTL_S
    with _CACHE_LOCK:
        _CACHE[key] = (time.monotonic() + ttl, result)
    if not result.conclusive:
        return

    folder = _cache_dir()
    path = os.path.join(folder, f"cloud-{key}.json")
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    payload = {
        "written_at": time.time(),
        "provider": result.provider,
        "region": result.region,
        "zone": result.zone,
        "notes": list(result.notes),
        "instance_type": result.instance_type,
    }
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, allow_nan=False)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@dataclass(frozen=True)
class _Outcome:
    """How one provider's probe ended."""

    provider: str
    region: str | None = None
    zone: str | None = None
    note: str = ""
    conclusive: bool = True
    instance_type: str | None = None


_Probe = Generator[_Request, _Response, _Outcome]


def _ask_type(
    found: _Outcome, ep: _Endpoint, partial: dict[str, _Outcome] | None, token: str | None = None
) -> _Probe:
    """With the region ``found``, ask the instance type too; the region stands if that fails."""
    if partial is not None:
        partial[found.provider] = found  # what the deadline leaves if the second answer is late
    resp = yield instance_type_request(found.provider, ep, token)
    itype, note = read_instance_type(found.provider, resp)
    return replace(found, instance_type=itype, note=note)


def _probe_gcp(ep: _Endpoint, partial: dict[str, _Outcome] | None = None) -> _Probe:
    """GCE metadata: the zone, from a server that proves it is Google's by its header."""
    resp = yield _Request(
        "GET", f"{ep.prefix}/computeMetadata/v1/instance/zone", (("Metadata-Flavor", "Google"),)
    )
    failed = _unusable("gcp", resp)
    if failed:
        return failed
    if resp.headers.get("metadata-flavor") != "Google":
        return _Outcome("gcp", note="gcp: answer lacks the 'Metadata-Flavor: Google' header")
    text = _text(resp)
    m = _GCP_ZONE_PATH_RE.fullmatch(text or "")
    if not m:
        return _Outcome("gcp", note=f"gcp: zone rejected: {_show(resp.body)}")
    return (yield from _ask_type(_Outcome("gcp", region=m.group(2), zone=m.group(1)), ep, partial))


def _probe_aws(ep: _Endpoint, partial: dict[str, _Outcome] | None = None) -> _Probe:
    """EC2 IMDSv2: a session token first, then the region; never the token-less v1 path."""
    resp = yield _Request(
        "PUT",
        f"{ep.prefix}/latest/api/token",
        (("X-aws-ec2-metadata-token-ttl-seconds", "60"), ("Content-Length", "0")),
    )
    failed = _unusable("aws", resp)
    if failed:
        return failed
    token = _text(resp)
    if token is None or not _AWS_TOKEN_RE.fullmatch(token):
        return _Outcome("aws", note=f"aws: token rejected: {_show(resp.body)}")
    resp = yield _Request(
        "GET",
        f"{ep.prefix}/latest/meta-data/placement/region",
        (("X-aws-ec2-metadata-token", token),),
    )
    failed = _unusable("aws", resp)
    if failed:
        return failed
    region = _text(resp)
    if region is None or not REGION_RE["aws"].fullmatch(region):
        return _Outcome("aws", note=f"aws: region rejected: {_show(resp.body)}")
    return (yield from _ask_type(_Outcome("aws", region=region), ep, partial, token))


def _probe_azure(ep: _Endpoint, partial: dict[str, _Outcome] | None = None) -> _Probe:
    """Azure IMDS: the compute location, as text (or as JSON, which some proxies return)."""
    resp = yield _Request(
        "GET",
        f"{ep.prefix}/metadata/instance/compute/location?api-version=2021-02-01&format=text",
        (("Metadata", "true"),),
    )
    failed = _unusable("azure", resp)
    if failed:
        return failed
    kind = resp.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
    text = _text(resp)
    if text is not None and kind == "application/json":
        text = _json_location(text)
    elif kind != "text/plain":
        text = None
    # Bare text is easy to mistake for a region, so the answer must also be typed as text or JSON.
    if text is None or not REGION_RE["azure"].fullmatch(text):
        return _Outcome("azure", note=f"azure: location rejected ({kind}): {_show(resp.body)}")
    return (yield from _ask_type(_Outcome("azure", region=text), ep, partial))


_PROBES = {"gcp": _probe_gcp, "aws": _probe_aws, "azure": _probe_azure}


def _json_location(text: str) -> str | None:
    """Return ``compute.location`` (or ``location``) from an IMDS JSON body, else None."""

    try:  # a JSON bomb (deep nesting, huge numbers) is refused before the parser recurses
        data: Any = _safejson.loads(text, max_bytes=MAX_BODY_BYTES, max_depth=8)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("compute"), dict):
        data = data["compute"]
    if isinstance(data, dict):
        data = data.get("location")
    return data if isinstance(data, str) else None


def _unusable(provider: str, resp: _Response) -> _Outcome | None:
    """Turn a non-200 or HTML answer into the probe's end, or return None to carry on."""
    if 300 <= resp.status < 400:
        where = resp.headers.get("location", "?")[:80]
        return _Outcome(
            provider, note=f"{provider}: HTTP {resp.status} redirect to {where!r} not followed"
        )
    if resp.status >= 500:
        return _Outcome(provider, note=f"{provider}: HTTP {resp.status}", conclusive=False)
    if resp.status != 200:
        return _Outcome(provider, note=f"{provider}: HTTP {resp.status}")
    if "html" in resp.headers.get("content-type", "").lower() or resp.body.lstrip()[:1] == b"<":
        return _Outcome(provider, note=f"{provider}: HTML answer rejected: {_show(resp.body)}")
    return None


def _text(resp: _Response) -> str | None:
    """Return the body as stripped ASCII, or None when it is not ASCII."""
    try:
        return resp.body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


def _unreadable(provider: str, exc: Exception) -> _Outcome:
    """The end of a probe whose answer could not be read: no answer, with a note."""
    return _Outcome(provider, note=f"{provider}: unreadable answer ({type(exc).__name__})")


def _resolve(endpoints: Mapping[str, _Endpoint], deadline_at: float) -> dict[str, Any]:
    """Return (family, sockaddr) or a failure reason per host; names resolve in threads."""
    hosts = {(ep.host, ep.port) for ep in endpoints.values()}
    found: dict[tuple[str, int], Any] = {}
    pending: list[tuple[tuple[str, int], threading.Thread]] = []

    def lookup(host: str, port: int, flags: int = 0) -> None:
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)[0]
            found[(host, port)] = (info[0], info[4])
        except (OSError, IndexError) as exc:
            found[(host, port)] = f"cannot resolve {host}: {exc}"

    for host, port in hosts:
        try:
            lookup_numeric = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )[0]
            found[(host, port)] = (lookup_numeric[0], lookup_numeric[4])
        except socket.gaierror:
            # A name: resolve it aside, since getaddrinfo cannot be bounded by our deadline.
            t = threading.Thread(target=lookup, args=(host, port), daemon=True)
            t.start()
            pending.append(((host, port), t))
    for hp, t in pending:
        t.join(max(0.0, deadline_at - time.perf_counter()))
        if hp not in found:
            found[hp] = f"cannot resolve {hp[0]} in time"
    return {p: found.get((ep.host, ep.port)) for p, ep in endpoints.items()}


def _probe_all(endpoints: Mapping[str, _Endpoint], deadline_at: float) -> _Metadata:
    """Run every probe concurrently until one finds a region, all end, or the deadline passes."""
    addresses = _resolve(endpoints, deadline_at)
    outcomes: dict[str, _Outcome] = {}
    partial: dict[str, _Outcome] = {}  # regions found by probes still asking the instance type
    probes: dict[str, _Probe] = {}
    live: dict[str, _Exchange] = {}
    answered: set[str] = set()
    sel = selectors.DefaultSelector()

    def send(provider: str, req: _Request) -> None:
        family, address = addresses[provider]
        try:
            ex = _Exchange(family, address, _encode(endpoints[provider], req))
        except _Failed as exc:
            outcomes[provider] = _Outcome(
                provider, note=f"{provider}: {exc.reason}", conclusive=exc.conclusive
            )
            return
        live[provider] = ex
        sel.register(ex.sock, ex.events, provider)

    def finish(provider: str) -> None:
        ex = live.pop(provider)
        sel.unregister(ex.sock)
        ex.close()

    try:
        for provider, ep in endpoints.items():
            if isinstance(addresses[provider], str):
                outcomes[provider] = _Outcome(
                    provider, note=f"{provider}: {addresses[provider]}", conclusive=False
                )
                continue
            probes[provider] = _PROBES[provider](ep, partial)
            send(provider, next(probes[provider]))
        stop_at = deadline_at - _TEARDOWN_RESERVE_S
        while live and not any(o.region for o in outcomes.values()):
            remaining = stop_at - time.perf_counter()
            if remaining <= 0:
                break
            for key, _ in sel.select(remaining):
                provider = key.data
                ex = live[provider]
                try:
                    resp = ex.step()
                except _Failed as exc:
                    finish(provider)
                    outcomes[provider] = _Outcome(
                        provider, note=f"{provider}: {exc.reason}", conclusive=exc.conclusive
                    )
                    continue
                except Exception as exc:  # whatever a server sends is "no answer", never a crash
                    finish(provider)
                    outcomes[provider] = _unreadable(provider, exc)
                    continue
                if resp is None:
                    if key.events != ex.events:
                        sel.modify(ex.sock, ex.events, provider)
                    continue
                finish(provider)
                answered.add(provider)
                try:
                    send(provider, probes[provider].send(resp))
                except StopIteration as done:
                    outcomes[provider] = done.value
                except Exception as exc:
                    outcomes[provider] = _unreadable(provider, exc)
    finally:
        for ex in live.values():
            ex.close()
        sel.close()
    found = [o for p in PROVIDERS for o in [outcomes.get(p)] if o is not None and o.region]
    if not found:  # a region whose instance type the deadline cut off still stands
        late = [partial[p] for p in PROVIDERS if p in partial and p not in outcomes]
        found = [replace(o, note=f"{o.provider}: instance type: no answer in time") for o in late]
    if found:
        o = found[0]
        said = (o.note,) if o.note else ()
        by = "metadata" if o.instance_type else None
        # A type cut off by the deadline may come next time: such an answer is kept briefly.
        definite = not o.note.endswith("no answer in time")
        return _Metadata(o.provider, o.region, o.zone, said, definite, o.instance_type, by)
    notes = []
    conclusive = True
    for provider in endpoints:
        outcome = outcomes.get(provider)
        if outcome is None:
            hint = ""
            if provider == "aws" and provider not in answered:
                # The usual cause on EC2: IMDSv2 drops the token reply one hop out of a container.
                hint = " (from a container, IMDSv2 needs an instance hop limit of 2)"
            notes.append(f"{provider}: no answer before the deadline{hint}")
            conclusive = False
        else:
            if outcome.note:
                notes.append(outcome.note)
            conclusive = conclusive and outcome.conclusive
    return _Metadata(notes=tuple(notes), conclusive=conclusive)
