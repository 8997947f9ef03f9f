"""The step's process tree as the sidecar sees it: its CPU time and memory, read from ``/proc``.

:class:`StepTree` gives the step's side of its shares of the machine (see
:mod:`carbonpipe.measure.share`): the sidecar samples it, with ``/proc/stat`` and the machine's
used memory, at CodeCarbon's start, every second and at the end (:meth:`StepTree.sample`).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from carbonpipe.measure.counters import read_cgroup_cpu_s, read_memory_used_bytes, read_proc_stat
from carbonpipe.measure.share import StepShares

_SCAN_REUSE_S = 0.05


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class StepTree:
    """The step as process mode charges it: its process tree's CPU and memory, or its own cgroup's CPU.

    This sidecar is the step's child, so it (and whatever it runs, such as ``lscpu``) is always
    left out. CPU time is counted as own + reaped children's time for every live process, so a
    child that exits between two samples keeps its CPU time (it moves into its parent's count).
    The tree is walked through ``/proc/<pid>/task/<tid>/children``, which costs the same on a
    node with thousands of processes as in a pod; psutil's full ``/proc`` scan is the fallback.
    """

    def __init__(self, config: dict[str, Any], t0: dict[str, Any]) -> None:
        import psutil

        self._psutil = psutil
        self.pid = int(config["ppid"])
        self.root = psutil.Process(self.pid)
        self.share = config["share"]
        self.cgroup_file = config.get("cgroup_file")
        self._me = os.getpid()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._walkable = os.path.exists(f"/proc/{self.pid}/task/{self.pid}/children")
        self._scanned: list[int] = []
        self._scanned_at = -math.inf
        self._t0_boot = None if t0.get("boot") is None else float(t0["boot"])
        if self.share == "cgroup" and t0.get("cgroup_cpu_s") is None:
            self.share = "process"  # readable when the step resolved it, not at its start
        # In the cgroup, this sidecar's CPU is left out from t0 on: all of it if it was spawned
        # after t0, else from now (a prepared sidecar waits idle for t0 and reads it at once).
        self._own_baseline_s = 0.0 if self._born_after_t0(self._me) else _own_cpu_s()
        if self.share == "cgroup":
            self.baseline_cpu_s = float(t0["cgroup_cpu_s"])
        else:
            # Processes that already ran before the step started count from now, not from birth.
            older = sum(self._cpu_of(p) for p in self.descendants() if self._born_before_t0(p))
            self.baseline_cpu_s = float(t0["proc_cpu_s"]) + older
        self.last_cpu_s = self.baseline_cpu_s

    def _stat(self, pid: int) -> list[bytes] | None:
        """Return /proc/<pid>/stat's fields after the command name (state first), or None."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rpartition(b")")[2].split()
        except OSError:
            return None

    def _born_before_t0(self, pid: int) -> bool:
        # psutil's create_time() rests on a boot time rounded to the second: too coarse to tell a
        # child spawned just after the step started. /proc's start time is in clock ticks since
        # boot, the clock the step read at t0.
        fields = self._stat(pid)
        if self._t0_boot is None or fields is None or len(fields) < 20:
            return False
        return int(fields[19]) / self._tick < self._t0_boot - 0.02

    def _born_after_t0(self, pid: int) -> bool:
        fields = self._stat(pid)
        if self._t0_boot is None or fields is None or len(fields) < 20:
            return False
        return int(fields[19]) / self._tick >= self._t0_boot - 0.02

    def _cpu_of(self, pid: int) -> float:
        fields = self._stat(pid)
        if fields is not None and len(fields) >= 15:
            # utime, stime, cutime, cstime
            return sum(int(v) for v in fields[11:15]) / self._tick
        try:
            t = self._psutil.Process(pid).cpu_times()
        except Exception:  # the process is gone or hidden: it no longer counts
            return 0.0
        return float(t.user + t.system + t.children_user + t.children_system)

    def _rss_of(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            pass
        try:
            return int(self._psutil.Process(pid).memory_info().rss)
        except Exception:
            return 0

    def descendants(self) -> list[int]:
        """Return the pids of the step's live descendants, without this sidecar's subtree."""
        # One walk serves both the CPU and the RAM reading of the same measurement.
        now = time.monotonic()
        if now - self._scanned_at >= _SCAN_REUSE_S:
            self._scanned = self._walk() if self._walkable else self._scan()
            self._scanned_at = now
        return self._scanned

    def _walk(self) -> list[int]:
        found: list[int] = []
        frontier = [self.pid]
        while frontier:
            pid = frontier.pop()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue  # it exited meanwhile
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        kids = [int(k) for k in f.read().split()]
                except (OSError, ValueError):
                    continue
                for kid in kids:
                    if kid != self._me:
                        found.append(kid)
                        frontier.append(kid)
        return found

    def _scan(self) -> list[int]:
        try:
            procs = self.root.children(recursive=True)
        except self._psutil.Error:
            return []
        kept = []
        for proc in procs:
            try:
                if proc.pid == self._me or proc.ppid() == self._me:
                    continue
            except self._psutil.Error:
                continue
            kept.append(proc.pid)
        return kept

    def cpu_s(self) -> float:
        """Return the step's cumulative CPU seconds, on the same scale as the t0 baseline."""
        total: float | None = None
        if self.share == "cgroup" and self.cgroup_file:
            usage = read_cgroup_cpu_s(self.cgroup_file)
            if usage is not None:
                # This sidecar lives in the same cgroup: its own cost is not the step's.
                total = usage - (_own_cpu_s() - self._own_baseline_s)
        else:
            total = self._cpu_of(self.pid) + sum(self._cpu_of(p) for p in self.descendants())
        if total is None:
            total = self.last_cpu_s
        self.last_cpu_s = total
        return total

    def rss_bytes(self) -> int:
        """Return the resident memory of the step's live process tree (this sidecar left out)."""
        return self._rss_of(self.pid) + sum(self._rss_of(pid) for pid in self.descendants())

    def sample(self, shares: StepShares, at_s: float, *, rss: bool = True) -> None:
        """Feed ``shares`` one sample: the step's CPU time since t0, ``/proc/stat``, its memory.

        ``rss=False`` leaves memory out (a last sample after the step's tree is gone).
        """
        step_cpu_s = self.cpu_s() - self.baseline_cpu_s
        shares.add(
            at_s,
            step_cpu_s=step_cpu_s,
            stat=read_proc_stat(),
            rss_bytes=self.rss_bytes() if rss else None,
            used_bytes=read_memory_used_bytes(),
        )
