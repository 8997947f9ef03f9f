"""What ``carbonpipe run`` owes the processes below it: its command dies with it, and as PID 1
it reaps orphans, as tini does.

* **The command dies with the wrapper** (Linux). Killed with ``kill -9``, the wrapper can
  neither forward a signal nor write a record; a command left running would run on
  unaccounted (its step's ``lost`` record, made from the last heartbeat, ends at the wrapper's
  death). So the command is started with a parent-death signal, ``PR_SET_PDEATHSIG`` =
  SIGKILL: the kernel kills it the moment the wrapper dies, as it kills a container's
  processes when its PID 1 dies. ``posix_spawn`` cannot set it, so :func:`spawn_tied` forks,
  sets it with ``prctl`` and execs; a pipe closed on exec reports an exec failure with its
  errno, as ``posix_spawn`` would. A wrapper that died before ``prctl`` ran is caught by
  checking the parent pid right after it. This costs the command's start ~2 ms over
  ``posix_spawnp`` (measured spawn-to-exit of ``/bin/true``: 1.2 ms, 3.8 ms); exec'ing through
  ``setpriv --pdeathsig KILL`` costs ~1 ms, but util-linux before 2.33 (RHEL 8) has no such
  option and minimal images have no ``setpriv``, and it cannot close that race. Elsewhere
  (macOS, BSD) there is no such signal: the command runs on, and its ``lost`` record covers it
  up to the wrapper's death only.
* **PID 1 reaps** (:class:`OrphanReaper`). In a fresh PID namespace (a container whose
  entrypoint is ``carbonpipe run``) every orphan is re-parented to the wrapper; unreaped, each
  stays a zombie. On SIGCHLD the wrapper reaps every exited child except the ones it waits for
  itself (the command, its measuring sidecar), so their exit status is never stolen.

Loaded only once the command is about to start: standard library only, nothing heavy.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

PR_SET_PDEATHSIG = 1
# The signal the command gets when the wrapper dies: the one a container's processes get from
# the kernel when its PID 1 dies. It cannot be caught, so nothing runs on unaccounted.
DEATH_SIGNAL_NAME = "SIGKILL"


def spawn_tied(cmd: Sequence[str], *, sigmask: Any, sigdefault: Sequence[int]) -> int:
    """Start ``cmd`` (found on PATH) with a parent-death signal; return its pid.

    The command gets the signal mask ``sigmask`` and default handling of ``sigdefault``, as
    ``os.posix_spawnp(..., setsigmask=, setsigdef=)`` gives it. Raises ``OSError`` (e.g.
    ``FileNotFoundError``) when it cannot be executed, as ``posix_spawnp`` does.
    """
    try:
        prctl = _prctl()
    except Exception:  # no way to set the signal here: the command starts untied, as elsewhere
        return os.posix_spawnp(
            cmd[0], list(cmd), os.environ, setsigmask=sigmask, setsigdef=sigdefault
        )
    core: Any = __import__("_signal")
    death = getattr(core, DEATH_SIGNAL_NAME)
    wrapper = os.getpid()
    argv, env = list(cmd), dict(os.environ)
    report_r, report_w = os.pipe()  # both ends close on exec
    pid = os.fork()
    if pid == 0:  # the child: from here on it execs the command or exits
        code = 0
        try:
            os.close(report_r)
            prctl(PR_SET_PDEATHSIG, death, 0, 0, 0)
            if os.getppid() != wrapper:
                os._exit(128 + death)  # the wrapper died before the signal was set
            for signum in sigdefault:
                core.signal(signum, core.SIG_DFL)
            core.pthread_sigmask(core.SIG_SETMASK, sigmask)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            code = exc.errno or 0
        except BaseException:
            code = 0
        try:
            os.write(report_w, code.to_bytes(4, "little"))
        finally:
            os._exit(127)
    os.close(report_w)
    try:
        report = b""
        while True:
            chunk = os.read(report_r, 4)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(report_r)
    if report:
        os.waitpid(pid, 0)
        errno = int.from_bytes(report[:4], "little") or 8  # ENOEXEC when unknown
        raise OSError(errno, os.strerror(errno), argv[0])
    return pid


def _prctl() -> Callable[..., int]:
    """libc's ``prctl(int, unsigned long x4)``, bound with ``_ctypes`` alone.

    The ``ctypes`` package costs a fresh process ~1.5 ms to import, on the command's way to its
    first instruction; its C core and these few lines (what ``ctypes.c_int``, ``c_ulong`` and
    ``CDLL(None)`` are made of) cost ~0.5 ms. ``ctypes`` itself if they no longer fit.
    """
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):
            _type_ = "i"

        class _ULong(_ctypes._SimpleCData):
            _type_ = "L"

        class _Prctl(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _Int
            _argtypes_ = (_Int, _ULong, _ULong, _ULong, _ULong)

        class _Libc:
            _handle = _ctypes.dlopen(None, 0)  # type: ignore[arg-type]  # the program itself

        return _Prctl(("prctl", _Libc()))  # type: ignore[arg-type]
    except (AttributeError, TypeError, OSError):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.restype = ctypes.c_int
        prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        return prctl  # type: ignore[no-any-return]


def _children() -> Iterable[int]:
    """This process's children, zombies included."""
    me = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return ()
    found: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{me}/task/{tid}/children", "rb") as fh:
                found.extend(int(p) for p in fh.read().split())
        except FileNotFoundError:
            return _zombie_children_by_scan(me)  # a kernel without CONFIG_PROC_CHILDREN
        except (OSError, ValueError):
            continue
    return found


def _zombie_children_by_scan(me: int) -> list[int]:
    """Zombies whose parent is ``me``, from every ``/proc/<pid>/stat`` (a container's few)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == me:
            found.append(int(name))
    return found


class OrphanReaper:
    """As PID 1, reap every exited child that is not in ``keep()`` while the block runs.

    ``keep`` names the children someone waits for (the command, the measuring sidecar): they
    are never reaped here, so their exit status reaches ``waitpid``/``Popen.wait`` intact.
    """

    def __init__(self, keep: Callable[[], Iterable[int]]) -> None:
        self._keep = keep
        self._previous: Any = None
        self.reaped = 0

    def __enter__(self) -> OrphanReaper:
        import signal

        self._previous = signal.signal(signal.SIGCHLD, self._on_sigchld)
        self.reap()  # orphans that exited before the handler was in place
        return self

    def __exit__(self, *exc_info: object) -> None:
        import signal

        signal.signal(signal.SIGCHLD, self._previous)
        self.reap()

    def _on_sigchld(self, _signum: int, _frame: Any) -> None:
        self.reap()

    def reap(self) -> None:
        """Reap the exited children not kept; never raises."""
        try:
            keep = {int(p) for p in self._keep() if p}
            for pid in _children():
                if pid in keep:
                    continue
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        self.reaped += 1
                except ChildProcessError:
                    continue
        except Exception:  # a reaper that fails must not fail the wait it runs inside
            return
