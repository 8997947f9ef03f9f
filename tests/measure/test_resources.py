"""What a step could use: the cgroup CPU limit, the process's CPUs, the GPUs CUDA leaves visible."""

from __future__ import annotations

from pathlib import Path

from carbonpipe.measure.resources import (
    cgroup_cpu_limit,
    cpu_sockets,
    host_gpus,
    step_resources,
    visible_gpus,
)


def _proc(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cgroup"
    path.write_text(text)
    return str(path)


def test_cgroup_v2_cpu_max_is_the_smallest_on_the_way_up(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    (root / "kubepods" / "pod1").mkdir(parents=True)
    (root / "kubepods" / "cpu.max").write_text("800000 100000\n")  # 8 CPUs for all pods
    (root / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")  # 1.5 for this one
    proc = _proc(tmp_path, "0::/kubepods/pod1\n")

    assert cgroup_cpu_limit(str(root), proc) == 1.5


def test_cgroup_v2_without_a_limit_says_none(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    (root / "cpu.max").write_text("max 100000\n")

    assert cgroup_cpu_limit(str(root), _proc(tmp_path, "0::/\n")) is None


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    folder = tmp_path / "fs" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("200000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = _proc(tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")

    assert cgroup_cpu_limit(str(tmp_path / "fs"), proc) == 2.0


def test_cuda_visible_devices() -> None:
    assert visible_gpus({}) is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,3"}) == 3
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == 1  # CUDA stops at -1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8f2b1c3e-1234-5678"}) == 1


def test_the_machine_it_saw(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / name).write_text("")
    cpus = tmp_path / "cpu"
    for n, package in enumerate(("0", "0", "1", "1")):
        (cpus / f"cpu{n}" / "topology").mkdir(parents=True)
        (cpus / f"cpu{n}" / "topology" / "physical_package_id").write_text(package)

    assert host_gpus(str(dev)) == 2
    assert cpu_sockets(str(cpus)) == 2
    assert cpu_sockets(str(tmp_path / "absent")) == 1


def test_step_resources_by_mode(tmp_path: Path) -> None:
    none = str(tmp_path / "no-cgroup")
    proc = _proc(tmp_path, "0::/\n")
    machine = step_resources("machine", cgroup_root=none, proc_cgroup=proc, environ={})
    assert (machine["cpus"], machine["cpus_from"], machine["gpus"]) == (None, "instance", None)
    process = step_resources(
        "process", cgroup_root=none, proc_cgroup=proc, environ={"CUDA_VISIBLE_DEVICES": "0"}
    )
    assert process["cpus_from"] == "process" and process["cpus"] >= 1
    assert process["gpus"] == 1 and process["host_gpus"] >= 1

    root = tmp_path / "fs"
    root.mkdir()
    (root / "cpu.max").write_text("50000 100000\n")
    limited = step_resources("process", cgroup_root=str(root), proc_cgroup=proc, environ={})
    assert (limited["cpus"], limited["cpus_from"]) == (0.5, "cgroup")
