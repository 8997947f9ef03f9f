"""Open steps: a running step's entry beside the spool, so a step killed with -9 still gets a record.

A step's process writes its entry when the step starts and removes it once the step's final
record is delivered or spooled. A process that dies first (``kill -9``, the OOM killer, a node
drain) leaves the entry behind, and a sweeper (:mod:`carbonpipe.lost_steps`: the next tracked
step's start, ``carbonpipe flush``, the nightly ESG job) turns it into the step's record. This
module keeps only the file layout and who may touch what; building records lives above it.
The layout, under ``<spool>/open/``::

    <record_id>.lock    flock-ed by the step's process for as long as it runs
    <record_id>.json    the entry: identity, started_at, location if known, the owner process
                        (pid, start time, boot, pid namespace), the sidecar's pid, the store URI
                        and its non-secret reopen options (temp file + rename)
    <record_id>.hb      the sidecar's heartbeat: energy measured so far (measure.heartbeat)
    <record_id>.final   the final record, written just before its delivery

Exactly once: the record id is the step's, and delivery is create-if-absent, so a final record
and a lost record can never both land; beyond that, a sweeper claims an entry only when its
owner is gone (its pid no longer runs the process that wrote the entry: same pid *and* start
time, on the same boot and in the same pid namespace) *and* it gets the entry's lock, which the
owner holds until it exits. The owner removes the files entry first and lock last; a sweeper
that finds ``.final`` delivers those bytes (a duplicate if the owner got that far) instead of
building a lost record. Entries hold no credential: store URIs are redacted, and only the
store's non-secret reopen options are kept.

An entry names the store its record goes to, so entries and final records are sealed like the
spool's envelopes (:mod:`carbonpipe.stores._spoolkey`): a sweeper leaves an entry whose seal
does not verify as it is (``untrusted``: ``carbonpipe flush`` reports it and exits 1), and
quarantines a final record whose seal does not verify, recording the step as lost instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonpipe.stores._spoolfiles import UNTRUSTED, private_spool_dir
from carbonpipe.stores._spoolkey import seal, seal_problem
from carbonpipe.stores.redact import redact

if TYPE_CHECKING:
    from carbonpipe.stores.base import Store

ENTRY_SCHEMA = "carbonpipe.open_step/1"
OPEN = "open"
ENTRY, LOCK, HEARTBEAT, FINAL = ".json", ".lock", ".hb", ".final"
# While an owner's sidecar lives, it may still be writing the step's last heartbeat; a sidecar
# alive this long after its last heartbeat is stuck, and no longer waited for.
SIDECAR_GRACE_S = 60.0
_CREATE_WAIT_S = 1.0


def open_dir(spool: str | os.PathLike[str] | None = None) -> Path:
    """The folder of open-step entries: ``<spool>/open``; UnsafeFolder if others can write there."""
    return private_spool_dir(spool) / OPEN


def heartbeat_path(record_id: str, spool: str | os.PathLike[str] | None = None) -> Path:
    """Where the sidecar of step ``record_id`` writes its heartbeat."""
    return open_dir(spool) / f"{_checked_id(record_id)}{HEARTBEAT}"


def store_reference(store: Store) -> dict[str, Any]:
    """The store's URI and reopen options with every secret out: what an entry may keep."""
    options = store.reopen_options()
    return {
        "store": redact(store.uri),
        "store_options": {str(k): redact(str(v)) for k, v in options.items() if v is not None},
    }


# -- the owner process ---------------------------------------------------------------------------


def _read_proc_stat(pid: int) -> list[bytes] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()
    except OSError:
        return None


def _read_text(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """What tells process ``pid`` (default: this one) apart from any later holder of its pid."""
    pid = os.getpid() if pid is None else pid
    fields = _read_proc_stat(pid)
    start = int(fields[19]) if fields is not None and len(fields) > 19 else None
    pid_ns = None
    with contextlib.suppress(OSError):
        pid_ns = os.readlink("/proc/self/ns/pid")
    return {
        "pid": pid,
        "start_ticks": start,
        "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
        "pid_ns": pid_ns,
    }


def process_gone(identity: Mapping[str, Any]) -> bool:
    """Whether the process ``identity`` describes has exited, as far as this process can tell.

    ``False`` only when it surely still runs: the same pid with the same start time, on the same
    boot and in the same pid namespace (a zombie has exited). A process of another boot is gone;
    one in another pid namespace cannot be seen, and counts as gone here (the entry's lock is
    then what keeps a sweeper off a live step).
    """
    pid = identity.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return True
    here = process_identity()
    if identity.get("boot_id") and here["boot_id"] and identity["boot_id"] != here["boot_id"]:
        return True
    if identity.get("pid_ns") != here["pid_ns"]:
        return True
    if here["start_ticks"] is None:  # no /proc: only whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    fields = _read_proc_stat(pid)
    if fields is None or len(fields) <= 19 or fields[0] in (b"Z", b"X"):
        return True
    return identity.get("start_ticks") not in (None, int(fields[19]))


def _checked_id(record_id: str) -> str:
    if not record_id or not all(c.isalnum() or c in "._-" for c in record_id):
        raise ValueError(f"record_id {record_id!r} must be letters, digits and ._- only")
    if record_id.startswith("."):
        raise ValueError(f"record_id {record_id!r} must not start with a dot")
    return record_id


def _write_atomic(path: Path, payload: bytes) -> None:
    """Replace ``path`` (temp file + rename). No fsync: an entry has to outlive its process,
    which the page cache does; a machine that loses power loses the step's process with it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _remove(folder: Path, record_id: str, *, leftovers: bool = False) -> None:
    """Entry first, lock last: whoever holds the lock finds no entry once the rest is gone.

    With ``leftovers``, also the temp files of writes a kill cut short (a sweeper's cleaning).
    """
    for suffix in (ENTRY, FINAL, HEARTBEAT):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / f"{record_id}{suffix}")
    if leftovers:
        for tmp in folder.glob(f"{record_id}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / f"{record_id}{LOCK}")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class OpenStep:
    """A running step's entry, held by the process that runs the step (see the module docstring).

    This process's open steps, by record id, are in :attr:`live` until :meth:`close`.
    """

    live: dict[str, OpenStep] = {}

    def __init__(self, folder: Path, record_id: str, lock_fd: int, entry: dict[str, Any]) -> None:
        self.folder = folder
        self.record_id = record_id
        self.entry = entry
        self._lock_fd: int | None = lock_fd

    @classmethod
    def create(
        cls,
        record_id: str,
        entry: Mapping[str, Any],
        *,
        spool: str | os.PathLike[str] | None = None,
    ) -> OpenStep:
        """Lock and write the entry of step ``record_id``; raise ``OSError`` if that fails.

        ``entry`` is the step's description; the owner (this process) is added to it. An entry
        of the same record id left by a process that is gone is taken over; one a sweeper is
        turning into a record is waited for, briefly.
        """
        folder = open_dir(spool)
        folder.mkdir(parents=True, exist_ok=True)
        lock_path = folder / f"{_checked_id(record_id)}{LOCK}"
        deadline = time.monotonic() + _CREATE_WAIT_S
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() > deadline:
                    raise BlockingIOError(f"{lock_path} is held by another process") from None
                time.sleep(0.01)
                continue
            if _same_file(fd, lock_path):
                break
            os.close(fd)  # a sweeper removed that lock file meanwhile: take the new one
        try:
            for suffix in (FINAL, HEARTBEAT):  # left by an earlier process of the same record id
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(folder / f"{record_id}{suffix}")
            document = {
                "schema": ENTRY_SCHEMA,
                **entry,
                "record_id": record_id,
                "owner": process_identity(),
                "opened_at": _utc_now(),
            }
            _write_atomic(folder / f"{record_id}{ENTRY}", _dump(document, folder))
        except BaseException:
            _remove(folder, record_id)
            os.close(fd)
            raise
        step = cls(folder, record_id, fd, document)
        cls.live[record_id] = step
        return step

    def update(self, **fields: Any) -> None:
        """Add ``fields`` to the entry (e.g. the location once it is known); never raises."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError, TypeError, ValueError):
            document = {**self.entry, **fields}
            _write_atomic(self.folder / f"{self.record_id}{ENTRY}", _dump(document, self.folder))
            self.entry = document

    def finishing(self, store: Store, key: str, data: bytes) -> None:
        """Keep the final record beside the entry before delivering it (the entry's successor)."""
        if self._lock_fd is None:
            return
        document = {
            "schema": ENTRY_SCHEMA,
            "record_id": self.record_id,
            **store_reference(store),
            "key": key,
            "data": data.decode(),
        }
        _write_atomic(self.folder / f"{self.record_id}{FINAL}", _dump(document, self.folder))

    def close(self) -> None:
        """The final record is delivered or spooled: remove the entry and let its lock go."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            _remove(self.folder, self.record_id)
        finally:
            os.close(fd)
            OpenStep.live.pop(self.record_id, None)


def settle(record_id: str) -> None:
    """Close this process's open entry of ``record_id`` (its record is safe); never raises."""
    step = OpenStep.live.get(record_id)
    if step is not None:
        with contextlib.suppress(OSError):
            step.close()


def _dump(document: Mapping[str, Any], folder: Path) -> bytes:
    """The document as JSON, sealed with the key of the spool ``folder`` (``<spool>/open``) is in."""
    return seal(folder.parent, dict(document))


# -- sweepers ------------------------------------------------------------------------------------


def entries(spool: str | os.PathLike[str] | None = None) -> list[Path]:
    """The entries waiting under ``<spool>/open``, oldest first."""
    try:
        scan = list(os.scandir(open_dir(spool)))
    except OSError:
        return []
    found = []
    for item in scan:
        if item.name.endswith(ENTRY) and not item.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                found.append((item.stat().st_mtime_ns, item.name, Path(item.path)))
    return [path for _, _, path in sorted(found)]


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if it is missing or unreadable."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _trusted_final(folder: Path, record_id: str) -> dict[str, Any] | None:
    """The step's final record if its seal verifies; one that does not goes to the quarantine."""
    path = folder / f"{record_id}{FINAL}"
    final = read_json(path)
    problem = None if final is None else seal_problem(folder.parent, final)
    if final is None or problem is None:
        return final
    from carbonpipe.stores.quarantine import quarantine

    with contextlib.suppress(OSError):  # not moved: the claim's done() must not delete it
        quarantine(
            folder.parent,
            path,
            reason=UNTRUSTED,
            store_uri=str(final.get("store") or ""),
            key=str(final.get("key") or ""),
            error=f"untrusted final record of an open step: {problem}",
        )
        return None
    raise OSError(f"{path} is untrusted ({problem}) and cannot be moved to the quarantine")


class Claim:
    """An entry whose owner is gone, locked by this process until the ``with`` block ends."""

    def __init__(
        self, folder: Path, record_id: str, entry: dict[str, Any], final: dict[str, Any] | None
    ) -> None:
        self.folder = folder
        self.record_id = record_id
        self.entry = entry
        self.final = final

    @property
    def heartbeat(self) -> Path:
        """The step's heartbeat file (it may not exist)."""
        return self.folder / f"{self.record_id}{HEARTBEAT}"

    def done(self) -> None:
        """The step's record is delivered or spooled: remove every file of the entry."""
        _remove(self.folder, self.record_id, leftovers=True)


def waiting_on(entry: Mapping[str, Any], path: Path) -> str | None:
    """Why the entry at ``path`` is not a sweeper's yet (its step or its sidecar runs), or None."""
    owner = entry.get("owner")
    if not isinstance(owner, Mapping) or not process_gone(owner):
        return "its process is running"
    sidecar = entry.get("sidecar")
    if isinstance(sidecar, Mapping) and not process_gone(sidecar):
        # Its last heartbeat is on its way, unless it has been silent (stuck) for too long.
        last = path.with_name(f"{path.name[: -len(ENTRY)]}{HEARTBEAT}")
        try:
            written = os.stat(last).st_mtime
        except OSError:
            written = _mtime(path)
        if time.time() - written < SIDECAR_GRACE_S:
            return "its sidecar is writing the last heartbeat"
    return None


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def claim(path: Path) -> Iterator[Claim | str]:
    """Lock the entry at ``path`` for this sweeper; yield a :class:`Claim`, or why not (a str)."""
    folder, record_id = path.parent, path.name[: -len(ENTRY)]
    entry = read_json(path)
    if entry is None:
        yield "unreadable" if path.exists() else "gone"
        return
    if seal_problem(folder.parent, entry) is not None:
        yield UNTRUSTED  # planted or altered: it may name any store; never acted on
        return
    reason = waiting_on(entry, path)
    if reason is not None:
        yield reason
        return
    lock_path = folder / f"{record_id}{LOCK}"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:  # an entry without its lock file (removed by hand): this sweeper makes one
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            yield "locked"
            return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield "locked"  # its owner (or a child it forked) still runs, or another sweeper
            return
        entry = read_json(path) if _same_file(fd, lock_path) else None
        if entry is None:
            yield "gone"  # settled, or swept by another process, since we listed it
            return
        if seal_problem(folder.parent, entry) is not None:
            yield UNTRUSTED
            return
        yield Claim(folder, record_id, entry, _trusted_final(folder, record_id))
    finally:
        os.close(fd)
