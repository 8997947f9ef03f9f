"""Poisoned hardware caches (issue 15 part 4d): implausible profiles, loose or foreign folders.

A tracked step (``carbonpipe run`` as a subprocess) runs on a cache folder holding a profile an
attacker edited; its energy must not follow the poisoned value, its record must say the cache
was refused, and the profile must be rewritten from fresh detection.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.errors import UnsafeFolder
from carbonpipe.measure import hwprofile

CLI = [sys.executable, "-m", "carbonpipe"]
# Busy for a while so CPU energy is well above zero whatever the TDP.
BURN = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.6: pass\n"


def _cache_copy(warm: Path, dest: Path) -> Path:
    shutil.copytree(warm / "hw", dest / "hw")
    os.chmod(dest, 0o700)
    return dest


def _poison(cache: Path, **cpu_fields: Any) -> None:
    for path in (cache / "hw").glob("*.json"):
        document = json.loads(path.read_text())
        for spec in document["plan"]["hardware_specs"]:
            if spec["kind"] == "cpu":
                spec.update(cpu_fields)
        path.write_text(json.dumps(document))


def _cpu_tdps(cache: Path) -> list[Any]:
    return [
        spec["tdp"]
        for path in sorted((cache / "hw").glob("*.json"))
        for spec in json.loads(path.read_text())["plan"]["hardware_specs"]
        if spec["kind"] == "cpu"
    ]


def _step(tmp_path: Path, cache: Path, name: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "CARBONPIPE_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(tmp_path / "store"),
            "--step",
            name,
            "--tracking-mode",
            "machine",
            "--record-json",
            str(out),
            "--",
            sys.executable,
            "-c",
            BURN,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads(out.read_text())
    return record


@pytest.mark.parametrize("tdp", [1e6, 0.001])
def test_a_poisoned_tdp_is_refused_noted_and_rewritten(
    tdp: float, tmp_path: Path, _warm_hardware_profile: Path
) -> None:
    clean = _cache_copy(_warm_hardware_profile, tmp_path / "clean")
    poisoned = _cache_copy(_warm_hardware_profile, tmp_path / "poisoned")
    genuine = _cpu_tdps(clean)
    _poison(poisoned, tdp=tdp)

    reference = _step(tmp_path, clean, "clean")
    measured = _step(tmp_path, poisoned, "poisoned")

    errors = measured["tracking_errors"]
    assert any("hardware profile" in e and "implausible" in e and "TDP" in e for e in errors), (
        errors
    )
    assert not any("implausible" in e for e in reference["tracking_errors"])
    # Energy per CPU-second as the clean cache gives it, within wide margins: the poisoned TDP
    # would have scaled it by 125,000 (1e6 W) or 1/8,000 (0.001 W).
    ratio = measured["energy_kwh"]["cpu"] / reference["energy_kwh"]["cpu"]
    assert 0.05 < ratio < 20, (measured["energy_kwh"], reference["energy_kwh"])
    # The machine-mode profile was rewritten from fresh detection.
    assert sorted(map(str, _cpu_tdps(poisoned))) != [str(tdp)] * len(genuine)
    assert any(t in genuine for t in _cpu_tdps(poisoned))


def test_plan_problem_names_each_implausible_field(_warm_hardware_profile: Path) -> None:
    path = sorted((_warm_hardware_profile / "hw").glob("*.json"))[0]
    document = json.loads(path.read_text())
    key, plan = document["key"], document["plan"]
    assert hwprofile.plan_problem(plan, key) is None

    def with_cpu(**fields: Any) -> dict[str, Any]:
        specs = [dict(s, **fields) if s["kind"] == "cpu" else s for s in plan["hardware_specs"]]
        return {**plan, "hardware_specs": specs}

    assert "TDP" in str(hwprofile.plan_problem(with_cpu(tdp=1e6), key))
    assert "TDP" in str(hwprofile.plan_problem(with_cpu(tdp=-5), key))
    assert "RAPL" in str(hwprofile.plan_problem(with_cpu(rapl_dir="/home/x/fake"), key))
    ram = {**plan, "conf": {**plan["conf"], "ram_total_size": 1e9}}
    assert "RAM" in str(hwprofile.plan_problem(ram, key))
    cpus = {**plan, "conf": {**plan["conf"], "cpu_count": 4096}}
    assert "CPUs" in str(hwprofile.plan_problem(cpus, key))
    forced = [
        dict(s, force_ram_power=1e6) if s["kind"] == "ram" else s for s in plan["hardware_specs"]
    ]
    assert "force_ram_power" in str(hwprofile.plan_problem({**plan, "hardware_specs": forced}, key))
    if key["cpu_model"] and os.uname().machine == "x86_64":
        other = with_cpu(model="AMD EPYC 9654 96-Core Processor", tdp=360)
        assert "this machine has" in str(hwprofile.plan_problem(other, key))


def test_find_cpu_tdp_w_ignores_implausible_profiles(
    tmp_path: Path, _warm_hardware_profile: Path
) -> None:
    cache = _cache_copy(_warm_hardware_profile, tmp_path / "cache")
    assert hwprofile.find_cpu_tdp_w(cache) is not None
    _poison(cache, tdp=1e6)
    assert hwprofile.find_cpu_tdp_w(cache) is None


def test_a_loose_cache_folder_is_neither_read_nor_written(
    tmp_path: Path, _warm_hardware_profile: Path
) -> None:
    cache = _cache_copy(_warm_hardware_profile, tmp_path / "cache")
    _poison(cache, tdp=1e6)
    os.chmod(cache / "hw", 0o777)
    before = {p.name: p.read_bytes() for p in (cache / "hw").glob("*.json")}

    record = _step(tmp_path, cache, "loose")

    errors = " ".join(record["tracking_errors"])
    assert "writable by other users" in errors and f"chmod 700 {cache / 'hw'}" in errors
    assert {p.name: p.read_bytes() for p in (cache / "hw").glob("*.json")} == before
    assert hwprofile.find_cpu_tdp_w(cache) is None
    with pytest.raises(UnsafeFolder):
        hwprofile.save_profile(cache / "hw" / "x.json", {}, {})


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")
def test_a_cache_folder_owned_by_another_user_is_refused(
    tmp_path: Path, _warm_hardware_profile: Path
) -> None:
    cache = _cache_copy(_warm_hardware_profile, tmp_path / "cache")
    os.chown(cache, 12345, 12345)
    path = next((cache / "hw").glob("*.json"))
    key = json.loads(path.read_text())["key"]

    with pytest.raises(UnsafeFolder, match="owned by uid 12345"):
        hwprofile.load_profile(path, key)


def test_a_profile_that_is_a_symlink_is_not_followed(
    tmp_path: Path, _warm_hardware_profile: Path
) -> None:
    cache = _cache_copy(_warm_hardware_profile, tmp_path / "cache")
    path = next((cache / "hw").glob("*.json"))
    key = json.loads(path.read_text())["key"]
    real = tmp_path / "elsewhere.json"
    path.rename(real)
    path.symlink_to(real)

    with pytest.raises(ValueError, match="cannot be read"):
        hwprofile.load_profile(path, key)
    hwprofile.save_profile(path, key, json.loads(real.read_text())["plan"])
    assert not path.is_symlink() and real.exists()
    assert (path.stat().st_mode & 0o777) == 0o600
