"""Steps whose process died before they stopped: each becomes one record with ``status: "lost"``.

While a tracked step runs, its process keeps an open entry beside the spool and its measuring
sidecar rewrites a heartbeat with the energy measured so far (:mod:`carbonpipe.stores.open_steps`,
:mod:`carbonpipe.measure.heartbeat`). When the process dies without stopping the step
(``kill -9``, the OOM killer, a node drain), a sweep turns the entry into the step's record:

* the energy measured up to the last heartbeat (the sidecar writes one more as the step's
  process dies, after a last sample where the machine or the cgroup is measured), with
  ``ended_at`` that heartbeat and a ``tracking_errors`` entry saying what was lost;
* priced like any record (:func:`carbonpipe.pricing.build_record`): the entry's location, or the
  one detected now, its grid intensity, the entry's PUE;
* delivered create-if-absent under the step's own record id (spooled if the store is down) and
  charged to the budget ledger, as the step would have done.

A step whose process died while delivering its final record left that record beside the entry:
the sweep delivers those bytes instead (a duplicate if they had landed), so a late final record
and a lost record never both exist. Sweeps run at the next tracked step's start (in the
background, once per process), in ``carbonpipe flush`` and in the nightly ESG job.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.record import Record, parse_utc, utc_iso

if TYPE_CHECKING:
    from carbonpipe.measure.base import Measurement
    from carbonpipe.measure.meter import Meter
    from carbonpipe.step import _Step
    from carbonpipe.stores.base import Store
    from carbonpipe.stores.open_steps import Claim, OpenStep
    from carbonpipe.tracker import CarbonTracker

log = logging.getLogger("carbonpipe")

LOST = "lost"
# Options an object store's ``reopen_options`` may hold: what an entry keeps of the tracker's
# store options while the store itself is not open yet (the rest may be secrets or clients).
_REOPEN_OPTIONS = ("endpoint_url", "region_name", "project", "timeout_s")
# The longest a process's exit waits for the sweep it started at a step's start.
EXIT_WAIT_S = 10.0


class LostReport:
    """What one sweep of the open steps did."""

    def __init__(self) -> None:
        self.lost = 0  # lost records made (status "lost") and delivered or spooled
        self.finished = 0  # final records a dying process had left beside its entry
        self.running = 0  # entries of running steps (or of a sidecar writing its last beat)
        self.spooled = 0  # of the records above, those the store could not take yet
        self.record_ids: list[str] = []
        self.failed: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready mapping."""
        return {
            "lost": self.lost,
            "finished": self.finished,
            "running": self.running,
            "spooled": self.spooled,
            "record_ids": list(self.record_ids),
            "failed": list(self.failed),
        }


# -- the step's own process -----------------------------------------------------------------------


def open_entry(tracker: CarbonTracker, handle: _Step, meter: Meter | None) -> OpenStep | None:
    """Leave the step's entry beside the spool; never raises (a failure is noted in the record)."""
    try:
        from carbonpipe.stores.open_steps import OpenStep, process_identity

        s = tracker.settings
        provider, region, country = tracker._arg_location
        sidecar = None if meter is None else meter.sidecar_pid
        budget = tracker.budget
        entry = {
            "identity": tracker._identity(handle),
            "started_at": utc_iso(handle.started_at),
            "location": _known_location(tracker),
            "locate": {
                "provider": provider,
                "region": region,
                "country_iso": country,
                "default_provider": s.default_provider,
                "default_region": s.default_region,
                "default_country": s.default_country,
                "probe": s.tracking_mode != "offline",
            },
            "sidecar": None if sidecar is None else process_identity(sidecar),
            **_store_reference(tracker),
            "pue": s.pue,
            "pue_user": "pue" in s.sources,  # else the place's published PUE, when priced
            "embodied_lifetime_years": s.embodied_lifetime_years,
            "tracking_mode": s.tracking_mode,
            "measure_power_secs": s.measure_power_secs,
            "run_scope": budget is not None and budget.scope.startswith("run:"),
            "kepler": _kepler_reference(s.kepler_prometheus_url, handle),
            "errors": list(handle.errors),
        }
        return OpenStep.create(handle.record_id, entry)
    except Exception as exc:
        message = f"open-step entry not written, so a killed step would get no record: {exc!r}"
        log.warning("carbonpipe: %s", message)
        handle.errors.append(message)
        return None


def _kepler_reference(url: str | None, handle: _Step) -> dict[str, Any] | None:
    """Where a lost record reads the step's pod energy from, when Kepler measures the step: the
    Prometheus URL (never with credentials: the settings refuse those) and the pod."""
    if not url:
        return None
    from carbonpipe.measure.kepler import find_pod

    pod = handle.kepler_pod or find_pod()
    fields = None if pod is None else {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}
    return {"prometheus_url": url, "pod": fields}


def heartbeat_file(record_id: str) -> tuple[str, str] | None:
    """Where the step's sidecar writes its heartbeat (``<spool>/open/<record id>.hb``) and the
    spool folder whose key seals it; None if the spool has no place for it."""
    try:
        from carbonpipe.stores.open_steps import heartbeat_path

        path = heartbeat_path(record_id)
        return str(path), str(path.parent.parent)
    except Exception:  # no spool folder (no home, say): open_entry notes the same failure
        return None


def _known_location(tracker: CarbonTracker) -> dict[str, Any] | None:
    """The step's location if it is already settled or settles without a metadata probe."""
    loc = tracker._location
    if loc is None:
        from carbonpipe.location.providers import ENV_COUNTRY, ENV_REGION

        _, region, country = tracker._arg_location
        # A region or country given by argument or environment settles it with no packet sent:
        # resolving it now is what the tracker would do at stop (and then keeps).
        given = region or country or os.environ.get(ENV_REGION) or os.environ.get(ENV_COUNTRY)
        if not given and tracker.settings.tracking_mode != "offline":
            return None
        try:
            loc = tracker.location
        except Exception:  # the tracker reports it at stop; a sweeper detects it again
            return None
    return {
        "provider": loc.provider,
        "region": loc.region,
        "country_iso": loc.country_iso,
        "detected_by": loc.detected_by,
        "notes": list(loc.notes),
        "instance_type": getattr(loc, "instance_type", None),
        "instance_type_by": getattr(loc, "instance_type_by", None),
    }


def _store_reference(tracker: CarbonTracker) -> dict[str, Any]:
    """The tracker's store as an entry may keep it: URI and non-secret options, no credential."""
    from carbonpipe.stores.open_steps import store_reference
    from carbonpipe.stores.redact import redact
    from carbonpipe.stores.uri import parse_store_uri

    if tracker._store is not None:
        return store_reference(tracker._store)
    uri = tracker.settings.store
    scheme, folder, _ = parse_store_uri(uri)
    if scheme == "file":  # opened from another folder later: the path must not be relative
        return {"store": os.path.abspath(os.path.expanduser(folder)), "store_options": {}}
    options = {"timeout_s": getattr(tracker.settings, "store_timeout_s", None)}
    options.update(tracker._store_options)
    kept = {
        k: redact(str(v))
        for k, v in options.items()
        if k in _REOPEN_OPTIONS and isinstance(v, (str, int, float)) and not isinstance(v, bool)
    }
    return {"store": redact(uri), "store_options": kept}


# -- sweeping ------------------------------------------------------------------------------------


def sweep(spool_dir: str | os.PathLike[str] | None = None) -> LostReport:
    """Turn every open entry whose process is gone into its record; safe to run anywhere, any time.

    Entries of running steps are left alone (counted in ``running``). Each record goes to the
    store its entry names, reopened from its URI; a store that is down gets it through the spool.
    """
    from carbonpipe.stores.open_steps import claim, entries

    report = LostReport()
    stores: dict[str, Store] = {}
    try:
        for path in entries(spool_dir):
            try:
                with claim(path) as claimed:
                    if isinstance(claimed, str):
                        if claimed.startswith("its "):
                            report.running += 1
                        elif claimed == "unreadable":
                            report.failed.append(f"{path}: unreadable open-step entry, left as is")
                        elif claimed == "untrusted":  # planted or altered: never acted on
                            report.failed.append(
                                f"{path}: open-step entry without a valid seal (planted or "
                                "altered), never acted on; inspect it, then remove it"
                            )
                        continue
                    _settle_claim(claimed, stores, report, spool_dir)
            except Exception as exc:  # left in place for the next sweep, which tries again
                from carbonpipe.stores.redact import redact

                message = redact(f"{path.name}: {type(exc).__name__}: {exc}")
                report.failed.append(message)
                log.warning("carbonpipe: lost step %s not recovered yet: %s", path, message)
    finally:
        for store in stores.values():
            with contextlib.suppress(Exception):
                store.close()
    if report.lost or report.finished:
        log.info(
            "carbonpipe: %d lost step(s) recorded, %d final record(s) recovered",
            report.lost,
            report.finished,
        )
    return report


def _settle_claim(
    claimed: Claim,
    stores: dict[str, Store],
    report: LostReport,
    spool_dir: str | os.PathLike[str] | None,
) -> None:
    from carbonpipe.delivery import deliver_record
    from carbonpipe.measure.heartbeat import read_heartbeat

    final = claimed.final
    if final is not None and not (
        isinstance(final.get("data"), str) and isinstance(final.get("key"), str)
    ):
        final = None
    record, why = None, None
    if final is not None:
        try:
            record = Record.from_json(final["data"])
        except ValueError as exc:  # InvalidRecord too: these bytes can never be delivered
            why = _quarantine_final(claimed, final, exc)
            final = None
    if final is not None and record is not None:
        where, data = final, final["data"].encode()  # its own bytes, under its record's key
    else:
        ignored: list[str] = []  # a heartbeat whose seal does not verify is never used
        beat = read_heartbeat(  # sealed with the key of the spool its entry sits in
            claimed.heartbeat, seal_root=claimed.folder.parent, problems=ignored
        )
        record = lost_record(claimed.entry, beat, why=why, ignored=ignored)
        where, data = claimed.entry, record.to_json()
    store = _open(where, stores)
    run_scope = bool(claimed.entry.get("run_scope"))
    done = deliver_record(store, record, data=data, run_scope=run_scope, spool_dir=spool_dir)
    if done.conflict:
        report.failed.append(str(done.delivery.error))  # different bytes under that id: kept aside
    elif done.charge_error is not None:
        report.failed.append(done.charge_error)
    claimed.done()
    report.record_ids.append(record.record_id)
    report.spooled += done.delivery.spooled
    if final is None:
        report.lost += 1
    else:
        report.finished += 1


def _quarantine_final(claimed: Claim, final: Mapping[str, Any], exc: Exception) -> str:
    """Keep a final record that can never be delivered in the quarantine; say why for the record.

    The step still gets exactly one record: its ``lost`` record, from the last heartbeat.
    """
    from carbonpipe.stores.open_steps import FINAL
    from carbonpipe.stores.quarantine import quarantine
    from carbonpipe.stores.redact import redact

    error = redact(f"{type(exc).__name__}: {exc}")[:500]
    source = claimed.folder / f"{claimed.record_id}{FINAL}"
    try:
        item = quarantine(
            claimed.folder.parent,
            source,
            reason="invalid_record",
            store_uri=str(final.get("store") or ""),
            key=str(final["key"]),
            error=error,
        )
        kept = f"kept in {item.path}"
    except OSError as move_error:
        kept = f"could not be moved to the quarantine ({move_error})"
    log.warning(
        "carbonpipe: the final record of %s is invalid (%s); %s", claimed.record_id, error, kept
    )
    return (
        f"the step's final record was invalid ({error}) and is {kept}; this record holds the "
        "energy measured up to its last heartbeat instead"
    )


def _open(where: Mapping[str, Any], stores: dict[str, Store]) -> Store:
    from carbonpipe.stores.opener import open_store

    uri = where.get("store")
    options = where.get("store_options") or {}
    if not isinstance(uri, str) or not isinstance(options, Mapping):
        raise ValueError("the entry names no store")
    if uri not in stores:
        stores[uri] = open_store(uri, **{str(k): str(v) for k, v in options.items()})
    return stores[uri]


def lost_record(
    entry: Mapping[str, Any],
    heartbeat: Mapping[str, Any] | None,
    *,
    why: str | None = None,
    ignored: Sequence[str] = (),
) -> Record:
    """The record of a step whose process died: its last heartbeat's energy, priced as usual.

    ``why`` is a further tracking error (the step's own final record could not be used);
    ``ignored`` says why a heartbeat that was there was not used (its seal did not verify).
    """
    from carbonpipe.pricing import IDENTITY_FIELDS, build_record

    identity = entry.get("identity")
    if not isinstance(identity, Mapping) or any(f not in identity for f in IDENTITY_FIELDS):
        raise ValueError("the entry has no step identity")
    owner = _mapping(entry.get("owner"))
    who = f"its process (pid {owner.get('pid')})"
    if heartbeat is not None:
        m = _with_kepler(entry, _heartbeat_measurement(heartbeat))
        when = "as the process died" if heartbeat.get("owner_gone") else "before the process died"
        note = (
            f"step lost: {who} ended without stopping tracking; energy and ended_at are those of "
            f"its last heartbeat, {m.duration_s:.1f} s after the start, written {when}; "
            "whatever ran after it is not counted"
        )
    elif ignored:  # one was there, but not trusted
        m = _no_measurement(entry)
        note = (
            f"step lost: {who} ended without stopping tracking and its heartbeat cannot be "
            "trusted (see below); its energy is unknown and recorded as 0"
        )
    else:
        m = _no_measurement(entry)
        note = (
            f"step lost: {who} ended without stopping tracking before its sidecar wrote any "
            "heartbeat; its energy is unknown and recorded as 0"
        )
    location, intensity, notes = _locate(entry)
    errors = [note, *([why] if why else []), *ignored, *(str(e) for e in entry.get("errors") or ())]
    errors += [*notes, *m.errors]
    from carbonpipe.hardware.pue import resolve_pue

    # An entry of an older version has no pue_user: its pue stands, as it was written.
    given = float(entry.get("pue", 1.0)) if entry.get("pue_user", True) else None
    pue, pue_source = resolve_pue(location["provider"], location["region"], given)
    elsewhere = entry.get("scope") == "worker"  # its work ran elsewhere, and was still running
    if elsewhere:
        errors.append(
            "remote work not measured: the step's process died while its work ran elsewhere "
            "(a pod, a managed job); only the process that waited on it was measured "
            "(measurement.scope: worker)"
        )
    record = build_record(
        identity,
        LOST,
        m,
        location=location,
        intensity=intensity,
        pue=pue,
        pue_source=pue_source,
        hardware=_hardware(entry, location, m),
        tracking_mode=str(entry.get("tracking_mode") or m.tracking_mode),
        errors=list(dict.fromkeys(errors)),
    )
    if elsewhere:
        from dataclasses import replace

        record = replace(record, measurement={**record.measurement, "scope": "worker"})
    return Record.from_json(record.to_json())  # checked against the schema like any record


def _hardware(
    entry: Mapping[str, Any], location: Mapping[str, Any], m: Measurement
) -> dict[str, Any] | None:
    """The lost step's hardware, for its embodied share over the time it ran: what its sidecar
    read in its cgroup (in the heartbeat) and the instance type the step had settled; None
    (embodied unknown) when no heartbeat said what the step could use."""
    if m.resources is None:
        return None
    known = _mapping(entry.get("location"))
    itype = known.get("instance_type")
    by = known.get("instance_type_by")
    years = entry.get("embodied_lifetime_years")
    if not (isinstance(years, (int, float)) and not isinstance(years, bool) and 0 < years < 100):
        from carbonpipe.hardware.embodied import DEFAULT_LIFETIME_YEARS

        years = DEFAULT_LIFETIME_YEARS
    return {
        "provider": location.get("provider"),
        "instance_type": itype if isinstance(itype, str) and 0 < len(itype) <= 80 else None,
        "instance_type_by": by
        if isinstance(by, str) and isinstance(itype, str) and itype
        else None,
        "resources": dict(m.resources),
        "lifetime_years": float(years),
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _heartbeat_measurement(heartbeat: Mapping[str, Any]) -> Measurement:
    from carbonpipe.measure.heartbeat import heartbeat_measurement

    return heartbeat_measurement(dict(heartbeat))


def _with_kepler(entry: Mapping[str, Any], m: Measurement) -> Measurement:
    """``m`` (the heartbeat's) replaced by the pod's energy from Kepler over the same window,
    when Kepler measured the step, as the step's own stop would have done; the heartbeat's
    figure stays in ``cross_check``, or is used with the reason when Kepler has none."""
    ref = _mapping(entry.get("kepler"))
    url = ref.get("prometheus_url")
    if not isinstance(url, str) or not url:
        return m
    from dataclasses import replace

    from carbonpipe.measure import kepler

    fields = _mapping(ref.get("pod"))
    pod = kepler.Pod(
        **{
            k: v
            for k in ("namespace", "name", "uid")
            if isinstance(v := fields.get(k), str) and 0 < len(v) <= 253
        }
    )
    if not (pod.uid or (pod.namespace and pod.name)):
        return replace(
            m,
            errors=(
                *m.errors,
                "Kepler: the step's pod was not known when it started; its heartbeat's figure "
                "was used",
            ),
        )
    return kepler.apply(m, url, pod=pod)


def _no_measurement(entry: Mapping[str, Any]) -> Measurement:
    from carbonpipe.measure.base import Measurement

    started = parse_utc(str(entry.get("started_at"))).astimezone(timezone.utc)
    mode = "process" if entry.get("tracking_mode") == "process" else "machine"
    return Measurement.nothing(started, tracking_mode=mode, share=mode)


def _locate(entry: Mapping[str, Any]) -> tuple[dict[str, Any], Any, list[str]]:
    """The entry's location (detected now if the step had not settled it), and its intensity."""
    from carbonpipe.intensity.table import lookup_intensity

    notes: list[str] = []
    known = entry.get("location")
    if isinstance(known, Mapping) and known.get("detected_by"):
        location = {k: known.get(k) for k in ("provider", "region", "country_iso", "detected_by")}
        notes.extend(f"location: {n}" for n in known.get("notes") or ())
    else:
        location, found = _detect_now(entry)
        notes.extend(found)
    try:
        intensity = lookup_intensity(
            location["provider"], location["region"], location["country_iso"]
        )
    except Exception as exc:
        notes.append(f"no intensity for the step's location ({exc}); the world average is used")
        intensity = lookup_intensity(None, None, None)
    return location, intensity, notes


def _detect_now(entry: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    from carbonpipe.location.detect import detect_location
    from carbonpipe.stores.open_steps import process_identity

    args = _mapping(entry.get("locate"))
    owner = _mapping(entry.get("owner"))
    # A metadata server answers for the machine it is asked from: only worth it on the same boot.
    same_boot = owner.get("boot_id") == process_identity()["boot_id"]
    notes = ["location: the step had not settled it; detected when its lost record was made"]
    try:
        loc = detect_location(
            provider=args.get("provider"),
            region=args.get("region"),
            country_iso=args.get("country_iso"),
            default_provider=args.get("default_provider"),
            default_region=args.get("default_region"),
            default_country=args.get("default_country"),
            probe=bool(args.get("probe")) and same_boot,
        )
    except Exception as exc:
        notes.append(f"location detection failed: {exc!r}")
        world = {"provider": None, "region": None, "country_iso": None, "detected_by": "world"}
        return world, notes
    notes.extend(f"location: {n}" for n in loc.notes)
    location = {
        "provider": loc.provider,
        "region": loc.region,
        "country_iso": loc.country_iso,
        "detected_by": loc.detected_by,
    }
    return location, notes


# -- in the background, at a tracked step's start ---------------------------------------------------

_lock = threading.Lock()
_started = False
_worker: threading.Thread | None = None


def sweep_in_background() -> None:
    """Sweep once per process, off the step's path, if an entry's process is gone; never raises."""
    global _started, _worker
    with _lock:
        if _started:
            return
        _started = True
    try:
        from carbonpipe.stores.open_steps import entries, read_json, waiting_on

        ready = False
        for path in entries():
            entry = read_json(path)
            if entry is not None and waiting_on(entry, path) is None:
                ready = True
                break
        if not ready:
            return
    except Exception as exc:
        log.debug("carbonpipe: open-step check failed: %s", exc)
        return
    try:
        worker = threading.Thread(target=_sweep_quietly, name="carbonpipe-lost-steps", daemon=True)
        worker.start()
    except RuntimeError as exc:  # no thread to spare: flush or the next process sweeps
        log.debug("carbonpipe: no lost-step sweep in this process: %s", exc)
        return
    _worker = worker
    atexit.register(_wait_at_exit)


def _sweep_quietly() -> None:
    try:
        sweep()
    except Exception as exc:
        log.warning("carbonpipe: lost-step sweep failed, will retry later: %s", exc)


def _wait_at_exit() -> None:
    """Let the sweep finish its deliveries, within what is left of the store deadline at exit.

    An entry is removed only once delivered, so one cut short is swept again by the next process.
    """
    worker = _worker
    if worker is not None:
        from carbonpipe.stores import breaker

        worker.join(min(EXIT_WAIT_S, breaker.exit_wait_left()))
