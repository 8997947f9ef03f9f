"""A step is charged only the GPUs it can see: CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES over
device lists shaped like NVML's (no GPU on these machines: the selection logic and CodeCarbon's own
GPU object are tested, not a GPU's counters)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonpipe.measure.gpus import Device, Selection, from_codecarbon, restrict_codecarbon, select

U = [f"GPU-{i}{i}{i}{i}aaaa-1fb8-192a-7ab7-0e0e4476c18{i}" for i in range(4)]
MIG = ["MIG-11111111-2222-3333-4444-555555555555", "MIG-66666666-7777-8888-9999-000000000000"]
# NVML's view of a 4-GPU node whose GPU 2 is split in two MIG instances.
NODE = [Device(i, U[i], "NVIDIA H100 80GB HBM3", MIG if i == 2 else ()) for i in range(4)]


def _indices(env: dict[str, str], node: list[Device] = NODE) -> list[int]:
    return select(node, env).indices


@pytest.mark.parametrize(
    ("env", "indices"),
    [
        ({}, [0, 1, 2, 3]),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, [0, 1, 2, 3]),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, []),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, []),
        ({"NVIDIA_VISIBLE_DEVICES": ""}, []),
        ({"CUDA_VISIBLE_DEVICES": ""}, []),
        ({"CUDA_VISIBLE_DEVICES": "1"}, [1]),
        ({"CUDA_VISIBLE_DEVICES": "3,1"}, [1, 3]),
        ({"CUDA_VISIBLE_DEVICES": "1,7,2"}, [1]),  # CUDA stops at the first invalid entry
        ({"CUDA_VISIBLE_DEVICES": "-1"}, []),
        ({"CUDA_VISIBLE_DEVICES": "1,1,2"}, [1]),  # a repeat is invalid too
        ({"CUDA_VISIBLE_DEVICES": U[3]}, [3]),
        ({"CUDA_VISIBLE_DEVICES": U[3][:12]}, [3]),  # a unique UUID prefix
        ({"CUDA_VISIBLE_DEVICES": "GPU-"}, []),
        ({"CUDA_VISIBLE_DEVICES": MIG[1]}, [2]),
        ({"NVIDIA_VISIBLE_DEVICES": f"{U[1]},{U[3]}"}, [1, 3]),
        ({"NVIDIA_VISIBLE_DEVICES": "0,2"}, [0, 2]),
        (
            {"NVIDIA_VISIBLE_DEVICES": "0,2", "CUDA_VISIBLE_DEVICES": "1"},
            [2],
        ),  # CUDA's 1 = 2nd left
        ({"NVIDIA_VISIBLE_DEVICES": MIG[0]}, [2]),
        ({"NVIDIA_VISIBLE_DEVICES": f"MIG-{U[0]}/1/0"}, [0]),  # the R450 MIG form
        ({"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0"}, [0]),
    ],
)
def test_the_selection_follows_cuda_and_the_container_runtime(
    env: dict[str, str], indices: list[int]
) -> None:
    assert _indices(env) == indices


def test_a_runtime_that_exposed_only_the_allocated_gpus_renumbers_them() -> None:
    # The device plugin gave GPUs 5 and 6 of the node; inside the container NVML sees two, 0 and 1.
    container = [Device(0, U[0]), Device(1, U[1])]
    assert _indices({"NVIDIA_VISIBLE_DEVICES": "5,6"}, container) == [0, 1]
    assert _indices({"NVIDIA_VISIBLE_DEVICES": "1"}, container) == [1]  # a privileged pod


def test_the_record_says_which_devices_and_mig_instances() -> None:
    s = select(NODE, {"CUDA_VISIBLE_DEVICES": f"{MIG[1]},0"})
    assert s.devices == (
        {"index": 0, "uuid": U[0], "mig_uuid": None},
        {"index": 2, "uuid": U[2], "mig_uuid": MIG[1]},
    )
    assert any("MIG instance has no energy counter" in n for n in s.notes)


def test_unknown_names_and_order_are_noted() -> None:
    s = select(NODE, {"NVIDIA_VISIBLE_DEVICES": "GPU-ffff", "CUDA_VISIBLE_DEVICES": "0,9"})
    assert s.indices == []
    assert any("no GPU of this node" in n for n in s.notes)
    mixed = [Device(0, U[0], "A100"), Device(1, U[1], "T4")]
    s = select(mixed, {"CUDA_VISIBLE_DEVICES": "1"})
    assert s.indices == [1] and any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in n for n in s.notes)
    s = select(mixed, {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert s.notes == ()


_entry = st.one_of(
    st.integers(-2, 6).map(str),
    st.sampled_from([*U, *MIG, "all", "none", "void", "GPU-", "MIG-", U[1][:10], " 1", "x"]),
)
_value = st.none() | st.lists(_entry, max_size=5).map(",".join)


@settings(max_examples=300, deadline=None)
@given(nvidia=_value, cuda=_value, count=st.integers(0, 4))
def test_a_step_is_never_charged_a_gpu_outside_what_it_may_see(
    nvidia: str | None, cuda: str | None, count: int
) -> None:
    node = NODE[:count]
    env = {k: v for k, v in (("NVIDIA_VISIBLE_DEVICES", nvidia), ("CUDA_VISIBLE_DEVICES", cuda)) if v is not None}  # fmt: skip
    s = select(node, env)
    assert set(s.indices) <= {d.index for d in node}
    assert len(s.devices) == len({(d["index"], d["mig_uuid"]) for d in s.devices})
    narrower = select(node, {**env, "CUDA_VISIBLE_DEVICES": ""})
    assert narrower.indices == []
    if cuda is None:  # CUDA_VISIBLE_DEVICES only ever narrows what the runtime exposed
        assert s.indices == select(node, {k: v for k, v in env.items()}).indices
    else:
        wider = select(node, {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"})
        assert set(s.indices) <= set(wider.indices)
    if nvidia is None and cuda is None:
        assert s.indices == [d.index for d in node]


class _NVML:
    """Stands in for NVML behind CodeCarbon's AllGPUDevices: static info as NVML gives it."""

    def __init__(self, devices: list[Device]) -> None:
        self.devices = devices

    def get_gpu_static_info(self) -> list[dict[str, Any]]:
        return [
            {"name": d.name, "uuid": d.uuid, "total_memory": 1, "power_limit": 1, "gpu_index": d.index}
            for d in self.devices
        ]  # fmt: skip


def test_codecarbons_gpu_object_reads_only_the_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    from codecarbon.external.hardware import GPU

    gpu = GPU(gpu_ids=None)  # CodeCarbon's own object, NVML absent on this machine
    gpu.devices = _NVML(NODE[:3])  # type: ignore[assignment]
    gpu.num_gpus = 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", U[2])
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    selection = restrict_codecarbon(gpu)
    assert isinstance(selection, Selection)
    assert selection.devices == ({"index": 2, "uuid": U[2], "mig_uuid": None},)
    assert list(gpu._get_gpu_ids()) == [2]  # what CodeCarbon samples and sums from now on


def test_nvml_static_info_becomes_devices() -> None:
    devices = from_codecarbon(_NVML(NODE).get_gpu_static_info())
    assert [(d.index, d.uuid) for d in devices] == [(d.index, d.uuid) for d in NODE]


def test_the_sidecar_narrows_codecarbons_tracker_to_the_visible_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from codecarbon.external.hardware import GPU

    from carbonpipe.measure import hwprofile
    from carbonpipe.measure.sidecar import _Session, _Tail

    session = _Session({"tracking_mode": "machine", "measure_power_secs": 15.0}, _Tail())
    tracker = hwprofile.new_tracker("machine", 15.0)  # CodeCarbon's real tracker
    gpu = GPU(gpu_ids=None)
    gpu.devices = _NVML(NODE)  # type: ignore[assignment]
    gpu.num_gpus = len(NODE)
    tracker._hardware.append(gpu)
    # MIG instances come from NVML itself (absent here): a MIG UUID then names no GPU, noted.
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", f"{U[1]},{MIG[0]},{U[3]}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    session._restrict_gpus(tracker)
    assert session.gpu_devices == [{"index": 3, "uuid": U[3], "mig_uuid": None}]
    assert list(gpu._get_gpu_ids()) == [3]
    assert any("no GPU of this node" in e for e in session.errors)


def test_the_record_carries_the_devices_and_validates() -> None:
    from datetime import datetime, timedelta, timezone

    from carbonpipe.intensity.table import lookup_intensity
    from carbonpipe.measure import kepler
    from carbonpipe.measure.base import Measurement
    from carbonpipe.pricing import build_record
    from carbonpipe.record import Record, make_record_id
    from tests.schema_check import assert_valid

    t0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
    devices = select(NODE, {"CUDA_VISIBLE_DEVICES": f"0,{MIG[1]}"}).devices
    m = Measurement(
        started_at=t0, ended_at=t0 + timedelta(seconds=10), duration_s=10.0,
        cpu_energy_kwh=1e-4, gpu_energy_kwh=2e-4, ram_energy_kwh=1e-5,
        cpu_power_w=36.0, gpu_power_w=72.0, ram_power_w=3.6, method="nvml",
        tracking_mode="machine", share="machine", codecarbon_version="3.3.0",
        cpu_model=None, gpu_model="NVIDIA H100 80GB HBM3", gpu_devices=devices,
    )  # fmt: skip
    m = kepler.with_kepler(m, {"cpu": 5e-5, "gpu": 1e-4, "ram": 0.0})
    identity = {
        "record_id": make_record_id("p", "p", "r", "s", 1), "project": "p", "experiment": "",
        "pipeline": "p", "run_id": "r", "step": "s", "team": "", "attempt": 1, "labels": {},
    }  # fmt: skip
    location = {"provider": None, "region": None, "country_iso": "FRA", "detected_by": "default"}
    record = build_record(
        identity, "succeeded", m, location=location,
        intensity=lookup_intensity(None, None, "FRA"), pue=1.0, tracking_mode="machine",
    )  # fmt: skip
    raw = record.to_json()
    assert_valid("record", raw)
    assert Record.from_json(raw).to_json() == raw
    measurement = record.to_dict()["measurement"]
    assert measurement["gpu_devices"] == [dict(d) for d in devices]
    assert measurement["method"] == "kepler"
    assert measurement["cross_check"]["ratio"] == pytest.approx(1.5e-4 / 3.1e-4)
