"""Which of the node's GPUs a step can see, so it is charged those and no others.

CodeCarbon reads every GPU NVML lists (its issue #936): on a shared node a step would be charged
its neighbours' GPUs. Two variables say what a step may use:

* ``NVIDIA_VISIBLE_DEVICES`` (the NVIDIA container runtime; Kubernetes' device plugin sets it to
  the GPUs it allocated): ``all``; ``none``, ``void`` or empty for no GPU; else a comma list of
  indices, ``GPU-`` UUIDs or ``MIG-`` UUIDs. Inside a container the runtime has usually exposed
  only those GPUs already, renumbered from 0: indices NVML cannot have are then read that way.
* ``CUDA_VISIBLE_DEVICES`` (CUDA itself), applied to what is left, in index order: empty for no
  GPU; else indices into the visible GPUs, ``GPU-`` UUIDs (a unique prefix is enough) or ``MIG-``
  UUIDs. As CUDA does, the list stops at its first entry that names no GPU (or repeats one).
  CUDA numbers GPUs fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; NVML in PCI order:
  on a node with mixed GPU models, an index is matched in PCI order and a note says so.

A MIG instance has no energy counter of its own: its whole GPU is measured, and
``mig_uuid`` in the record says which instance the step was given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_NONE = ("", "none", "void")


@dataclass(frozen=True)
class Device:
    """One GPU as NVML lists it: its index, UUID, model name and MIG instances' UUIDs."""

    index: int
    uuid: str | None = None
    name: str | None = None
    mig: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    """The GPUs a step is charged: ``devices`` ({index, uuid, mig_uuid} each), with notes."""

    devices: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()

    @property
    def indices(self) -> list[int]:
        """The NVML indices to read, each once, in order."""
        return sorted({d["index"] for d in self.devices})


def _entries(value: str) -> list[str]:
    return [e.strip() for e in value.split(",")]


def _match(entry: str, devices: Sequence[Device]) -> tuple[Device, str | None] | None:
    """The device ``entry`` (a ``GPU-``/``MIG-`` UUID or prefix) names, with its MIG instance."""
    if entry.startswith("MIG-"):
        for d in devices:
            for mig in d.mig:
                if mig == entry or (len(entry) > 4 and mig.startswith(entry)):
                    return d, mig
        if entry.startswith("MIG-GPU-"):  # the R450 form: MIG-GPU-<uuid>/<gi>/<ci>
            gpu = entry[4:].partition("/")[0]
            found = [d for d in devices if d.uuid and d.uuid == gpu]
            return (found[0], entry) if found else None
        return None
    if entry.startswith("GPU-") and len(entry) > 4:
        found = [d for d in devices if d.uuid and d.uuid.startswith(entry)]
        return (found[0], None) if len(found) == 1 else None
    return None


def _nvidia(value: str | None, devices: list[Device], notes: list[str]) -> list[tuple[Device, str | None]]:  # fmt: skip
    pairs: list[tuple[Device, str | None]] = [(d, None) for d in devices]
    if value is None or value.strip().lower() == "all":
        return pairs
    if value.strip().lower() in _NONE:
        return []
    entries = [e for e in _entries(value) if e]
    indices = [int(e) for e in entries if e.isdigit()]
    count = len(devices)
    chosen: list[tuple[Device, str | None]] = []
    if indices and any(i >= count for i in indices) and len(entries) == count:
        # The runtime exposed exactly these GPUs already, renumbered from 0: all of them.
        return pairs
    for e in entries:
        found: tuple[Device, str | None] | None
        if e.isdigit():
            hit = next((d for d in devices if d.index == int(e)), None)
            found = None if hit is None else (hit, None)
        else:
            found = _match(e, devices)
        if found is None:
            notes.append(f"NVIDIA_VISIBLE_DEVICES names {e[:60]!r}, which is no GPU of this node")
        elif found not in chosen:
            chosen.append(found)
    return chosen


def _cuda(value: str | None, pairs: list[tuple[Device, str | None]], notes: list[str], order: str | None) -> list[tuple[Device, str | None]]:  # fmt: skip
    if value is None:
        return pairs
    chosen: list[tuple[Device, str | None]] = []
    names = {d.name for d, _ in pairs}
    for e in _entries(value) if value.strip() else []:
        if e.isdigit() or (e.startswith("-") and e[1:].isdigit()):
            i = int(e)
            found = pairs[i] if 0 <= i < len(pairs) else None
            if found is not None and order != "PCI_BUS_ID" and len(names) > 1:
                notes.append(
                    "CUDA_VISIBLE_DEVICES indices were matched in PCI order; CUDA numbers mixed "
                    "GPU models fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID"
                )
        else:
            hit = _match(e, [d for d, _ in pairs])
            found = None
            if hit is not None:
                d, mig = hit
                found = (d, mig) if mig is not None else next(p for p in pairs if p[0] == d)
        if found is None or found in chosen:
            why = "repeats a GPU" if found is not None else "names no visible GPU"
            notes.append(
                f"CUDA_VISIBLE_DEVICES entry {e[:60]!r} {why}: CUDA ignores it and every entry "
                "after it"
            )
            break
        chosen.append(found)
    return chosen


def select(devices: Sequence[Device], environ: Mapping[str, str] | None = None) -> Selection:
    """The GPUs of ``devices`` (NVML's list) a process with ``environ`` can see."""
    env = os.environ if environ is None else environ
    ordered = sorted(devices, key=lambda d: d.index)
    notes: list[str] = []
    pairs = _nvidia(env.get("NVIDIA_VISIBLE_DEVICES"), ordered, notes)
    pairs = _cuda(env.get("CUDA_VISIBLE_DEVICES"), pairs, notes, env.get("CUDA_DEVICE_ORDER"))
    if any(mig for _, mig in pairs):
        notes.append("a MIG instance has no energy counter of its own: its whole GPU was measured")
    chosen = sorted(pairs, key=lambda p: (p[0].index, p[1] or ""))
    return Selection(
        devices=tuple({"index": d.index, "uuid": d.uuid, "mig_uuid": mig} for d, mig in chosen),
        notes=tuple(dict.fromkeys(notes)),
    )


def from_codecarbon(static_info: Sequence[Mapping[str, Any]]) -> list[Device]:
    """NVML's devices from CodeCarbon's ``get_gpu_static_info()``, MIG instances from pynvml."""
    devices = []
    for info in static_info:
        index = int(info["gpu_index"])
        uuid = info.get("uuid")
        devices.append(
            Device(
                index=index,
                uuid=str(uuid) if uuid else None,
                name=str(info.get("name")) if info.get("name") else None,
                mig=_mig_uuids(index),
            )
        )
    return devices


def _mig_uuids(index: int) -> tuple[str, ...]:
    """The UUIDs of the MIG instances on GPU ``index`` (none when MIG is off or unknown)."""
    try:
        import pynvml

        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            return ()
        found = []
        for i in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            except pynvml.NVMLError:
                continue
            uuid = pynvml.nvmlDeviceGetUUID(mig)
            found.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
        return tuple(found)
    except Exception:
        return ()


def restrict_codecarbon(gpu: Any, environ: Mapping[str, str] | None = None) -> Selection:
    """Make CodeCarbon's ``GPU`` hardware read only the GPUs the step can see; the selection."""
    selection = select(from_codecarbon(gpu.devices.get_gpu_static_info()), environ)
    gpu.gpu_ids = selection.indices
    gpu._gpu_ids_resolved = True  # CodeCarbon 3.3: ids already resolved to NVML indices
    return selection
