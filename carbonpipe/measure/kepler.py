"""A step's energy from Kepler (the pod's own counters), read back through Prometheus' HTTP API.

When ``CARBONPIPE_KEPLER_PROMETHEUS_URL`` (or carbon.yaml ``measure: {source: kepler,
prometheus_url: ...}``) is set and the step runs in a Kubernetes pod, the step's energy is what
Kepler attributed to its pod over the step's window, not CodeCarbon's host-wide figure:

* ``increase(kepler_pod_cpu_joules_total{<pod>, zone="package"}[Ns])`` for the CPU (one zone only:
  Kepler's zones overlap, ``core`` and ``uncore`` are inside ``package``), the ``dram`` zone for
  RAM and ``kepler_pod_gpu_joules_total`` where it is exported, each evaluated at the step's end
  with N = the step's duration rounded up to seconds; the mean power over those N seconds times
  the step's exact duration is its energy (J / 3.6e6 = kWh). Kepler 0.10+ metric names.
* The pod is named by the downward API's ``POD_NAMESPACE`` and ``POD_NAME`` (the names
  Kubernetes' own examples use), else by its UID read from ``/proc/self/cgroup`` (``kubepods``).
* CodeCarbon's figure for the same window stays beside it in ``measurement.cross_check`` with the
  ratio Kepler / CodeCarbon. When Kepler has nothing (a pod shorter than the scrape interval, a
  missing series, Prometheus down or slower than the deadline), CodeCarbon's figure is used and
  ``tracking_errors`` says why.

Only the standard library is imported, and only when Kepler is configured.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carbonpipe.measure.base import Measurement

URL_ENV = "CARBONPIPE_KEPLER_PROMETHEUS_URL"
DEFAULT_DEADLINE_S = 3.0
_KWH_PER_J = 1 / 3.6e6
# Kepler 0.10+ (the rewrite): per-pod counters in joules, labelled pod_name / pod_namespace / pod_id.
CPU_METRIC = "kepler_pod_cpu_joules_total"
GPU_METRIC = "kepler_pod_gpu_joules_total"
_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


class KeplerError(Exception):
    """Kepler gave no usable figure; the message is the reason written in ``tracking_errors``."""


@dataclass(frozen=True)
class Pod:
    """The pod whose energy is read: by namespace and name, or by UID."""

    namespace: str | None = None
    name: str | None = None
    uid: str | None = None

    def selector(self) -> str:
        """The PromQL label matchers naming this pod (values escaped)."""
        if self.namespace and self.name:
            return f"pod_namespace={quote(self.namespace)},pod_name={quote(self.name)}"
        if self.uid:
            return f"pod_id={quote(self.uid)}"
        raise KeplerError("the pod is not known")


def quote(value: str) -> str:
    """A PromQL string literal for ``value``: double-quoted, backslash, quote and newlines escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped.replace("\r", "\\r") + '"'


def pod_uid_from_cgroup(text: str) -> str | None:
    """The pod UID in a ``/proc/self/cgroup`` text (``kubepods`` paths, cgroupfs or systemd)."""
    for line in text.splitlines():
        path = line.rpartition(":")[2]
        if "kubepods" not in path:
            continue
        found = _UID.search(path)
        if found:
            return found.group(1).replace("_", "-")
    return None


def find_pod(environ: dict[str, str] | os._Environ[str] | None = None) -> Pod | None:
    """This process's pod: ``POD_NAMESPACE``/``POD_NAME``, else the UID in its cgroup; or None."""
    env = os.environ if environ is None else environ
    namespace, name = env.get("POD_NAMESPACE", "").strip(), env.get("POD_NAME", "").strip()
    if namespace and name:
        return Pod(namespace=namespace, name=name)
    try:
        with open("/proc/self/cgroup", encoding="utf-8", errors="replace") as f:
            uid = pod_uid_from_cgroup(f.read(65536))
    except OSError:
        uid = None
    return Pod(uid=uid) if uid else None


def window_seconds(duration_s: float) -> int:
    """The PromQL range for a step of ``duration_s``: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(duration_s - 1e-9))


def query(url: str, promql: str, *, at: float, deadline: float) -> float | None:
    """Evaluate an instant ``promql`` at ``at`` (unix s); the sum of its samples, None if empty."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise KeplerError(f"Prometheus at {url} was slower than the deadline")
    params = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    endpoint = url.rstrip("/") + "/api/v1/query?" + params
    try:
        with urllib.request.urlopen(endpoint, timeout=left) as response:  # noqa: S310 (configured URL)
            body = json.loads(response.read(1 << 20))
    except TimeoutError:
        raise KeplerError(f"Prometheus at {url} was slower than the deadline") from None
    except urllib.error.HTTPError as exc:
        raise KeplerError(f"Prometheus at {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise KeplerError(f"Prometheus at {url} was slower than the deadline") from None
        raise KeplerError(f"Prometheus at {url} could not be reached: {reason}") from None
    except ValueError:
        raise KeplerError(f"Prometheus at {url} answered something that is not JSON") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise KeplerError(f"Prometheus at {url} refused the query: {error or 'no reason given'}")
    result = (body.get("data") or {}).get("result")
    if not isinstance(result, list) or not result:
        return None
    total = 0.0
    for sample in result:
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise KeplerError(f"Prometheus at {url} answered an unreadable sample") from None
        if not math.isfinite(value) or value < 0:
            raise KeplerError(f"Prometheus at {url} answered {value!r} joules")
        total += value
    return total


def pod_energy_kwh(
    url: str,
    pod: Pod,
    *,
    ended_at: float,
    duration_s: float,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> dict[str, float]:
    """The pod's CPU, RAM and GPU energy (kWh) over the ``duration_s`` before ``ended_at``.

    Raises :class:`KeplerError` when the CPU series is missing or Prometheus fails; a missing
    ``dram`` or GPU series counts as 0 (not every node exports them).
    """
    deadline = time.monotonic() + deadline_s
    window = window_seconds(duration_s)
    scale = duration_s / window * _KWH_PER_J  # mean power over the window x the step's duration
    selector = pod.selector()

    def increase(metric: str, zone: str | None) -> float | None:
        matchers = selector + (f",zone={quote(zone)}" if zone else "")
        return query(url, f"sum(increase({metric}{{{matchers}}}[{window}s]))", at=ended_at,
                     deadline=deadline)  # fmt: skip

    cpu = increase(CPU_METRIC, "package")
    if cpu is None:
        raise KeplerError(
            f"Kepler has no {CPU_METRIC} series for the pod ({selector}) over the step's "
            f"{window} s (a step shorter than the scrape interval, or the pod not scraped)"
        )
    ram = increase(CPU_METRIC, "dram")
    gpu = increase(GPU_METRIC, None)
    return {"cpu": cpu * scale, "ram": (ram or 0.0) * scale, "gpu": (gpu or 0.0) * scale}


def apply(
    m: Measurement,
    url: str,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    pod: Pod | None = None,
) -> Measurement:
    """``m`` (CodeCarbon's) replaced by Kepler's figures, CodeCarbon's kept in ``cross_check``.

    Never raises: when Kepler has no figure, ``m`` comes back with the reason in ``errors``.
    """
    try:
        pod = pod or find_pod()
        if pod is None:
            raise KeplerError(
                "not in a Kubernetes pod that Kepler can name (no POD_NAMESPACE/POD_NAME, no "
                "kubepods cgroup)"
            )
        energy = pod_energy_kwh(
            url,
            pod,
            ended_at=m.ended_at.timestamp(),
            duration_s=m.duration_s,
            deadline_s=deadline_s,
        )
    except KeplerError as exc:
        return replace(m, errors=(*m.errors, f"Kepler: {exc}; CodeCarbon's figure was used"))
    except Exception as exc:  # never break the step
        reason = f"{type(exc).__name__}: {exc}"
        return replace(
            m, errors=(*m.errors, f"Kepler failed ({reason}); CodeCarbon's figure was used")
        )
    return with_kepler(m, energy)


def with_kepler(m: Measurement, energy: dict[str, float]) -> Measurement:
    """``m`` with Kepler's ``energy`` (kWh per part), CodeCarbon's total in ``cross_check``."""
    total = energy["cpu"] + energy["gpu"] + energy["ram"]
    cc_total = m.total_energy_kwh
    d = m.duration_s

    def power(kwh: float) -> float:
        return kwh / _KWH_PER_J / d if d > 0 else 0.0

    cross: dict[str, Any] = {
        "method": m.method,
        "energy_kwh": cc_total,
        "ratio": total / cc_total if cc_total > 0 else None,
    }
    return replace(
        m,
        cpu_energy_kwh=energy["cpu"],
        gpu_energy_kwh=energy["gpu"],
        ram_energy_kwh=energy["ram"],
        cpu_power_w=power(energy["cpu"]),
        gpu_power_w=power(energy["gpu"]),
        ram_power_w=power(energy["ram"]),
        method="kepler",
        share="pod",
        cross_check=cross,
        energy_profile=(),
    )
