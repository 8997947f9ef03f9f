"""The sidecar's start-up diet: CodeCarbon's import, without the module bodies it never uses here.

rapidfuzz's scorers (only for a TDP lookup by CPU name) and ``statistics`` (only for Apple's
powermetrics) load on first use instead; pynvml is blocked where no NVIDIA GPU can be
reachable, so an idle machine's sidecar does not pay for NVML's probing.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# What shows that an NVIDIA GPU may be reachable (see _nvidia_gpu_possible), besides /dev/nvidia*.
_NVIDIA_MARKERS = ("/dev/dxg", "/proc/driver/nvidia", "/sys/module/nvidia")
# rapidfuzz's submodules: CodeCarbon uses them only to look the CPU's TDP up by model name.
_DEFERRED_MODULES = frozenset(
    {"rapidfuzz.distance", "rapidfuzz.fuzz", "rapidfuzz.process", "rapidfuzz.utils"}
)
# The standard library's statistics: CodeCarbon uses it only for Apple's powermetrics.
_DEFERRED_ON_LINUX = frozenset({"statistics"})


def _skip_unused_imports() -> None:
    """Keep CodeCarbon's import from running module bodies this sidecar does not need.

    Call it before CodeCarbon is imported. Importing ``codecarbon.emissions_tracker`` is most of
    this sidecar's ~0.1 s of start-up CPU, spent alongside the step it measures (on a small VM, on
    the step's core). Three imports in it are dead weight on a CPU-only machine with a saved profile
    (figures alone; ~20 ms together in the sidecar, which shares some of their dependencies):

    * ``pynvml`` (~28 ms: thousands of ctypes declarations), imported by
      ``codecarbon.core.gpu_nvidia`` only to call ``nvmlInit()``, which then fails. Where no NVIDIA
      GPU can be reachable (Linux, no ``/dev/nvidia*`` node at all, no ``/dev/dxg`` as WSL2 has,
      no NVIDIA kernel module loaded) a ``None`` in ``sys.modules`` makes ``import pynvml`` raise
      ImportError, CodeCarbon's "pynvml is not installed" path: ``PYNVML_AVAILABLE`` is False
      either way, and either way it runs ``is_nvidia_system()`` (a failed ``nvidia-smi`` spawn).
      Wherever it is skipped, :func:`carbonpipe.measure.hwprofile.gpu_fingerprint` counts no NVIDIA
      device, so the profile key is the one a GPU-less machine gets with pynvml loaded too.
    * rapidfuzz's ``distance``, ``fuzz``, ``process`` and ``utils`` (~19 ms), imported by
      ``codecarbon.core.cpu`` for the TDP lookup of hardware detection, which a saved profile
      skips. They load through :class:`importlib.util.LazyLoader` instead: each module body runs
      at its first attribute use, so detection (no profile yet, or a stale one) still finds the
      same TDP. ``from rapidfuzz import fuzz, process, utils`` does not count as a use, as the
      ``rapidfuzz`` package itself loads normally and holds them as attributes.
    * ``statistics`` (~4 ms with ``fractions`` and ``decimal``), imported by
      ``codecarbon.core.powermetrics``, which only macOS uses; deferred the same way, on Linux only
      (there its body never runs, so the lazy load's lack of a lock before Python 3.12 is moot).

    Nothing else in the import is both sizeable and provably unused: psutil is what samples the
    step, and the rest (config parsing, units, the output-method classes) is a few ms all told.
    amdsmi is left alone: where installed, its import is how CodeCarbon finds AMD GPUs at all.
    Only meant for the sidecar's own process: it changes how this interpreter imports.
    """
    if "pynvml" not in sys.modules and not _nvidia_gpu_possible():
        sys.modules["pynvml"] = None  # type: ignore[assignment]
    if not any(isinstance(finder, _DeferredImports) for finder in sys.meta_path):
        names = _DEFERRED_MODULES
        if sys.platform.startswith("linux"):
            names |= _DEFERRED_ON_LINUX
        sys.meta_path.insert(0, _DeferredImports(names))


def _nvidia_gpu_possible(dev: str = "/dev", markers: Sequence[str] = _NVIDIA_MARKERS) -> bool:
    """Whether NVML could find an NVIDIA GPU here; True unless this Linux machine clearly has none."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        # nvidia<N>, but also nvidiactl, nvidia-uvm, nvidia-caps: any sign of the driver counts.
        if any(name.startswith("nvidia") for name in os.listdir(dev)):
            return True
    except OSError:
        return True
    return any(os.path.exists(marker) for marker in markers)


class _DeferredImports:
    """A meta path finder that loads the named pure-Python modules with importlib's LazyLoader."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name not in self.names or name in sys.modules:
            return None
        from importlib.machinery import PathFinder, SourceFileLoader, SourcelessFileLoader
        from importlib.util import LazyLoader

        spec = PathFinder.find_spec(name, path)
        # Extension modules initialise when created: LazyLoader cannot defer them.
        if spec is None or not isinstance(spec.loader, (SourceFileLoader, SourcelessFileLoader)):
            return None  # the finders after this one import it as usual
        spec.loader = LazyLoader(spec.loader)
        return spec
