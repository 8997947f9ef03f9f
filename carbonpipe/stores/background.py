"""Spool replay off the step's path: once per process in the background, and again at exit."""

from __future__ import annotations

import atexit
import logging
import threading

log = logging.getLogger("carbonpipe")


_replay_lock = threading.Lock()
_replay_started = False


def _replay_spool_in_background() -> None:
    """Replay records a previous run spooled, without slowing the step (once per process)."""
    global _replay_started
    with _replay_lock:
        if _replay_started:
            return
        _replay_started = True
    try:
        if not _something_to_replay():
            return
    except Exception as exc:
        log.debug("carbonpipe: spool check failed: %s", exc)
        return
    threading.Thread(target=_replay_quietly, name="carbonpipe-replay", daemon=True).start()


def _something_to_replay() -> bool:
    """Whether the spool holds an envelope that can be read: one directory listing first, so
    the spool module (and its seal and quarantine) loads only when something waits there."""
    from carbonpipe.stores._spoolfiles import anything_pending

    if not anything_pending():
        return False
    from carbonpipe.stores import spool

    return bool(spool.pending())


def _replay_quietly() -> None:
    try:
        from carbonpipe.stores import spool

        report = spool.replay()
        if report.delivered:
            log.info("carbonpipe: replayed %d spooled object(s)", report.delivered)
    except Exception as exc:
        log.warning("carbonpipe: spool replay failed, will retry later: %s", exc)


@atexit.register
def _replay_at_exit() -> None:
    """Replay what is pending, keeping the interpreter at most what is left of the store deadline.

    Skipped while a store's breaker is open (it timed out in this process) or the step's failed
    store calls already took the whole deadline: ``carbonpipe
    flush`` or the next run delivers. A replay still running at the deadline is left to die
    with the process; an envelope is removed only after its object is stored, so nothing is lost.
    """
    try:
        if not _something_to_replay():
            return
        from carbonpipe.stores import breaker

        wait_s = breaker.exit_wait_left()
        if wait_s <= 0:
            log.info("carbonpipe: a store timed out in this process; spool left for later replay")
            return
        worker = threading.Thread(
            target=_replay_quietly, name="carbonpipe-exit-replay", daemon=True
        )
        worker.start()
        worker.join(wait_s)
    except Exception:  # interpreter shutdown: nothing useful left to do
        pass
