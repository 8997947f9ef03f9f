"""The measuring sidecar's start-up: CodeCarbon's import skips what a saved profile never uses.

Each check runs in a fresh interpreter, as the sidecar does: what an import loads is per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.measure import hwprofile
from carbonpipe.measure import sidecar_imports as measure_sidecar_imports
from carbonpipe.measure.meter import Meter

_RAPIDFUZZ_DEFERRED = (
    "rapidfuzz.distance",
    "rapidfuzz.fuzz",
    "rapidfuzz.process",
    "rapidfuzz.utils",
)

# Reports on stdout, as JSON, which of the deferred modules hold a body that has not run yet.
_REPORT = """
import json, sys
def unloaded(name):
    module = sys.modules.get(name)
    return module is not None and type(module).__name__ == "_LazyModule"  # type() loads nothing
def report(**extra):
    print(json.dumps({
        "pynvml": "absent" if "pynvml" not in sys.modules
            else "blocked" if sys.modules["pynvml"] is None else "loaded",
        "unloaded": sorted(n for n in sys.modules if unloaded(n)),
        "rapidfuzz_modules": sorted(n for n in sys.modules if n.startswith("rapidfuzz.")),
        **extra,
    }))
"""


def _run(body: str) -> dict[str, Any]:
    code = _REPORT + body
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_codecarbon_imports_without_running_the_unused_module_bodies() -> None:
    report = _run(
        "from carbonpipe.measure import sidecar_imports as measure_sidecar_imports\n"
        "measure_sidecar_imports._skip_unused_imports()\n"
        "import codecarbon.emissions_tracker\n"
        "from codecarbon.core import gpu\n"
        "report(nvml=gpu.PYNVML_AVAILABLE, possible=measure_sidecar_imports._nvidia_gpu_possible())\n"
    )

    if report["possible"]:
        assert report["pynvml"] != "blocked"  # a machine that may have a GPU keeps NVML
    else:
        assert report["pynvml"] == "blocked"
        assert report["nvml"] is False  # what nvmlInit() failing gives CodeCarbon anyway
    # CodeCarbon holds rapidfuzz's modules, but none of their bodies (or imports) ran.
    assert set(_RAPIDFUZZ_DEFERRED) <= set(report["unloaded"])
    assert report["rapidfuzz_modules"] == sorted(_RAPIDFUZZ_DEFERRED)
    if sys.platform.startswith("linux"):
        assert "statistics" in report["unloaded"]


def test_without_the_skip_codecarbon_loads_them_all() -> None:
    """The check above would notice the difference: a plain import runs every body."""
    report = _run("import codecarbon.emissions_tracker\nreport()\n")

    assert report["pynvml"] == "loaded"
    assert report["unloaded"] == []
    assert len(report["rapidfuzz_modules"]) > len(_RAPIDFUZZ_DEFERRED)


def test_hardware_detection_with_deferred_rapidfuzz_saves_the_same_profile(
    tmp_path: Path, _warm_hardware_profile: Path
) -> None:
    report = _run(
        "import sys\n"
        "from carbonpipe.measure import sidecar_imports as measure_sidecar_imports\n"
        "from carbonpipe.measure import hwprofile\n"
        "measure_sidecar_imports._skip_unused_imports()\n"
        f"paths = hwprofile.warm_hardware_profile(cache_dir={str(tmp_path)!r})\n"
        "report(files=sorted(p.name for p in paths))\n"
    )

    # The session's profile was detected in pytest's own process, with every import as usual.
    assert report["files"]
    for name in report["files"]:
        deferred = json.loads((tmp_path / "hw" / name).read_text())
        plain = json.loads((_warm_hardware_profile / "hw" / name).read_text())
        assert deferred["key"] == plain["key"]
        assert deferred["plan"] == plain["plan"]
    assert hwprofile.find_cpu_tdp_w(tmp_path) == hwprofile.find_cpu_tdp_w(_warm_hardware_profile)
    if hwprofile.read_cpu_model():
        # The TDP was looked up by model name: rapidfuzz loaded on first use.
        assert not set(_RAPIDFUZZ_DEFERRED) & set(report["unloaded"])
        assert len(report["rapidfuzz_modules"]) > len(_RAPIDFUZZ_DEFERRED)


@pytest.mark.parametrize(
    ("dev_names", "markers", "possible"),
    [
        pytest.param([], [], False, id="none"),
        pytest.param(["null", "kvm", "tty0"], [], False, id="other-devices"),
        pytest.param(["nvidia0"], [], True, id="nvidia0"),
        pytest.param(["nvidiactl", "nvidia-uvm"], [], True, id="driver-nodes-only"),
        pytest.param([], ["dxg"], True, id="wsl2-dxg"),
        pytest.param([], ["driver"], True, id="kernel-module-loaded"),
    ],
)
def test_nvml_is_kept_wherever_an_nvidia_gpu_may_be_reachable(
    tmp_path: Path, dev_names: list[str], markers: list[str], possible: bool
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the device-node test is Linux's; elsewhere NVML is always kept")
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in dev_names:
        (dev / name).touch()
    for name in markers:
        (tmp_path / name).touch()
    paths = [str(tmp_path / name) for name in ("dxg", "driver")]

    assert measure_sidecar_imports._nvidia_gpu_possible(str(dev), paths) is possible


def test_unreadable_dev_keeps_nvml(tmp_path: Path) -> None:
    assert measure_sidecar_imports._nvidia_gpu_possible(str(tmp_path / "missing"), []) is True


def test_a_machine_that_skips_nvml_has_a_profile_key_without_nvidia_devices() -> None:
    if measure_sidecar_imports._nvidia_gpu_possible():
        pytest.skip("an NVIDIA GPU may be reachable here: NVML is not skipped")
    assert hwprofile.gpu_fingerprint()["nvidia_devices"] == 0


def test_the_sidecar_still_measures_from_the_saved_profile() -> None:
    meter = Meter(tracking_mode="machine")
    meter.start()
    time.sleep(0.3)
    m = meter.stop()

    assert meter.diagnostics["profile"] == "cache"
    assert m.errors == ()
    assert m.method in ("cpu_load", "rapl")
    assert m.cpu_energy_kwh > 0
    if not measure_sidecar_imports._nvidia_gpu_possible():
        assert (m.gpu_energy_kwh, m.gpu_model) == (0.0, None)
