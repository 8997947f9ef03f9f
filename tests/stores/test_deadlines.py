"""A hung or slow-dripping store costs a step one deadline at most, and loses nothing.

Real clients (boto3 against moto's server, google-cloud-storage against fake-gcs-server,
azure-storage-blob against Azurite) talk
through a :class:`FaultProxy` that is told to hang (accept, never answer) or to drip (one byte
every 0.2 s, so no read timeout ever fires and only the total deadline can stop the call).
Timing asserts compare with the same step against the healthy store, with wide margins: the
machine running the suite may have two busy cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbonpipe import CarbonTracker
from carbonpipe.config import resolve_settings
from carbonpipe.errors import ConfigError, ObjectNotFound, StoreTimeout, StoreUnavailable
from carbonpipe.record import Record
from carbonpipe.stores import breaker
from carbonpipe.stores.base import Store
from carbonpipe.stores.breaker import BreakerStore
from carbonpipe.stores.opener import open_store
from carbonpipe.stores.spool import deliver, pending, replay
from tests.fault_proxy import FaultProxy, Flaky

DEADLINE_S = 2.0
# What a loaded two-core machine may add to a step, a process start-up or a thread switch.
MARGIN_S = 8.0
CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]
STALLS = [pytest.param("hang", id="hang"), pytest.param("drip", id="drip")]


def _fail_fast(flaky: Flaky) -> dict[str, Any]:
    """Options for one attempt per call, so a refused or failing call costs one request."""
    return {"retry_timeout_s": 0} if flaky.backend == "gcs" else {"max_attempts": 1}


def stall(proxy: FaultProxy, mode: str) -> None:
    """Make the proxy hang, or drip a byte every 0.2 s."""
    if mode == "hang":
        proxy.hang()
    else:
        proxy.drip(0.2)


def via_proxy(flaky: Flaky, **options: Any) -> Store:
    """The flaky store's bucket through its proxy, with the test's deadline."""
    options.setdefault("timeout_s", DEADLINE_S)
    return open_store(flaky.direct.uri, endpoint_url=flaky.proxy.url, **options)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.monotonic()
    try:
        result: Any = fn()
    except Exception as exc:
        result = exc
    return time.monotonic() - t0, result


# -- one call -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", STALLS)
def test_a_call_to_a_stalled_store_gives_up_at_the_deadline(flaky_store: Flaky, mode: str) -> None:
    store = via_proxy(flaky_store)
    with pytest.raises(ObjectNotFound):
        store.get("records/absent.json")  # the client is built and warm
    stall(flaky_store.proxy, mode)
    elapsed, outcome = timed(lambda: store.put_if_absent("records/a.json", b"{}"))
    assert isinstance(outcome, StoreTimeout), outcome
    assert isinstance(outcome, StoreUnavailable)  # so every caller spools, as for a 503
    assert "store_timeout_s" in str(outcome) or "in time" in str(outcome)
    assert DEADLINE_S * 0.9 <= elapsed <= DEADLINE_S + MARGIN_S
    assert flaky_store.proxy.requests >= 2


def test_the_deadline_is_a_setting_the_spool_keeps_for_replay(flaky_store: Flaky) -> None:
    store = via_proxy(flaky_store, timeout_s="3.5")
    assert store.reopen_options()["timeout_s"] == "3.5"
    flaky_store.proxy.down()
    delivery = deliver(store, "records/r.json", b'{"r": 1}')
    assert delivery.spooled
    [item] = pending()
    envelope = json.loads(item.path.read_bytes())
    assert envelope["store_options"]["timeout_s"] == "3.5"
    reopened = open_store(envelope["store"], **envelope["store_options"])
    assert getattr(reopened, "timeout_s", None) == 3.5


@pytest.mark.parametrize("mode", STALLS)
def test_replay_to_a_stalled_store_gives_up_at_the_deadline(flaky_store: Flaky, mode: str) -> None:
    store = via_proxy(flaky_store, **_fail_fast(flaky_store))
    flaky_store.proxy.down()
    for i in range(3):
        assert deliver(store, f"records/{i}.json", b"{}").spooled
    stall(flaky_store.proxy, mode)
    elapsed, report = timed(replay)
    assert report.delivered == 0 and report.remaining == 3 and report.failed
    assert elapsed <= DEADLINE_S + MARGIN_S  # one deadline for the store, not one per object
    flaky_store.proxy.up()
    again = replay()  # a write the abandoned call finished late counts as a duplicate
    assert again.delivered + again.duplicates == 3 and again.remaining == 0


# -- the breaker ----------------------------------------------------------------------------


def test_after_one_timeout_the_breaker_answers_at_once_until_reset(flaky_store: Flaky) -> None:
    guarded = BreakerStore(via_proxy(flaky_store), cooldown_s=600)
    flaky_store.proxy.hang()
    first, outcome = timed(lambda: guarded.get("baselines/p/s.json"))
    assert isinstance(outcome, StoreTimeout) and first >= DEADLINE_S * 0.9
    assert guarded.is_open and breaker.any_open()
    seen = flaky_store.proxy.requests
    later = [timed(lambda: guarded.put_if_absent("records/r.json", b"{}")) for _ in range(5)]
    assert all(isinstance(exc, StoreTimeout) for _, exc in later)
    assert "not called" in str(later[0][1])
    assert sum(s for s, _ in later) < 1.0  # no request, no wait
    assert flaky_store.proxy.requests == seen
    flaky_store.proxy.up()
    guarded.reset()  # what the tracker does when the next step starts
    guarded.put_if_absent("records/after.json", b"{}")
    assert flaky_store.direct.get("records/after.json").data == b"{}"


def test_an_open_breaker_tries_again_after_its_cooldown(flaky_store: Flaky) -> None:
    guarded = BreakerStore(via_proxy(flaky_store), cooldown_s=0.5)
    flaky_store.proxy.drip(0.2)
    assert isinstance(timed(lambda: guarded.get("k.json"))[1], StoreTimeout)
    flaky_store.proxy.up()
    assert isinstance(timed(lambda: guarded.get("k.json"))[1], StoreTimeout)  # still open
    time.sleep(0.6)
    with pytest.raises(ObjectNotFound):
        guarded.get("k.json")
    assert not guarded.is_open


def test_slow_failures_that_add_up_to_the_deadline_open_the_breaker(
    flaky_store: Flaky,
) -> None:
    guarded = BreakerStore(via_proxy(flaky_store, **_fail_fast(flaky_store)), cooldown_s=600)
    flaky_store.proxy.fail(503, delay_s=0.8)
    outcomes = [timed(lambda: guarded.get("k.json")) for _ in range(5)]
    slow = [s for s, exc in outcomes if not str(exc).count("not called")]
    assert all(isinstance(exc, StoreUnavailable) for _, exc in outcomes)
    assert 2 <= len(slow) <= 3  # 0.8 s each: the third reaches the 2 s deadline
    assert "not called" in str(outcomes[-1][1]) and outcomes[-1][0] < 0.5
    # One deadline in all: the third call is only given what the first two left of it.
    assert sum(slow) <= DEADLINE_S + 1.0, slow  # in-process: no start-up to allow for


def store_get(store: BreakerStore) -> Any:
    return lambda: store.get("k.json")


def test_a_step_waits_one_deadline_in_all_across_its_stores(flaky_store: Flaky) -> None:
    first = BreakerStore(via_proxy(flaky_store, **_fail_fast(flaky_store)), cooldown_s=600)
    second = BreakerStore(via_proxy(flaky_store, **_fail_fast(flaky_store)), cooldown_s=600)
    first.reset()  # a new step
    flaky_store.proxy.fail(503, delay_s=0.6)
    waits = [timed(store_get(store))[0] for store in (first, second) * 3]
    assert sum(waits) <= DEADLINE_S + 1.0, waits  # one store alone: 3 x 0.6 each
    assert first.is_open and second.is_open
    assert breaker.exit_wait_s() == 0.0  # and the exit replay adds nothing
    first.reset()
    assert breaker.spent_s() == 0.0


def test_calls_in_the_background_do_not_spend_the_steps_deadline(flaky_store: Flaky) -> None:
    guarded = BreakerStore(via_proxy(flaky_store, **_fail_fast(flaky_store)), cooldown_s=600)
    guarded.reset()
    flaky_store.proxy.fail(503, delay_s=0.6)
    with breaker.background_calls():
        for _ in range(5):
            timed(lambda: guarded.get("k.json"))
    assert breaker.spent_s() == 0.0 and not guarded.is_open


# -- a tracked step and ``carbonpipe run`` ---------------------------------------------------


def _tracked_step(flaky: Flaky, name: str) -> tuple[float, Any]:
    tracker = CarbonTracker(
        project_name="deadlines",
        output_dir=flaky.direct.uri,
        store_options={"endpoint_url": flaky.proxy.url},
        store_timeout_s=DEADLINE_S,
        cloud_provider="gcp",
        cloud_region="europe-west1",
        measure_power_secs=0.5,
    )
    t0 = time.monotonic()
    with tracker.start_tracking(name):
        pass
    elapsed = time.monotonic() - t0
    return elapsed, tracker.stop_tracking(name)


def _flush(env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [*CLI, "flush", "--json"], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _spooled_record_keys() -> list[str]:
    return [item.key for item in pending() if item.key.startswith("records/")]


@pytest.mark.parametrize("mode", STALLS)
def test_a_tracked_step_pays_a_stalled_store_one_deadline_and_loses_nothing(
    flaky_store: Flaky, mode: str
) -> None:
    healthy_s, healthy = _tracked_step(flaky_store, "healthy")
    assert flaky_store.direct.exists(healthy.record.key)
    stall(flaky_store.proxy, mode)
    seen = flaky_store.proxy.requests
    stalled_s, stalled = _tracked_step(flaky_store, "stalled")
    assert stalled.status == "succeeded"
    assert stalled_s <= healthy_s + DEADLINE_S + MARGIN_S, (healthy_s, stalled_s)
    # One call waited (the baseline read); the record and the charges went straight to the spool.
    assert flaky_store.proxy.requests - seen <= 2
    assert _spooled_record_keys() == [stalled.record.key]
    flaky_store.proxy.up()
    flushed = _flush()
    assert flushed["remaining"] == 0 and flushed["delivered"] >= 1
    stored = Record.from_json(flaky_store.direct.get(stalled.record.key).data)
    assert stored.record_id == stalled.record_id


def _cli_env(flaky: Flaky) -> dict[str, str]:
    env = {**os.environ, "CARBONPIPE_STORE_TIMEOUT_S": f"{DEADLINE_S:g}"}
    endpoint = {
        "s3": "AWS_ENDPOINT_URL_S3",
        "gcs": "STORAGE_EMULATOR_HOST",
        "azure": "AZURE_STORAGE_BLOB_ENDPOINT",
    }[flaky.backend]
    env[endpoint] = flaky.proxy.url
    return env


def _carbonpipe_run(flaky: Flaky, step: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    cmd = [*CLI, "run", "--store", flaky.direct.uri, *WHERE, "--step", step, "--", "true"]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_cli_env(flaky))
    return time.monotonic() - t0, out


@pytest.mark.parametrize("mode", STALLS)
def test_carbonpipe_run_pays_a_stalled_store_one_deadline_and_loses_nothing(
    flaky_store: Flaky, mode: str
) -> None:
    healthy_s, healthy = _carbonpipe_run(flaky_store, "healthy")
    assert healthy.returncode == 0, healthy.stderr
    assert not pending()
    stall(flaky_store.proxy, mode)
    seen = flaky_store.proxy.requests
    stalled_s, stalled = _carbonpipe_run(flaky_store, "stalled")
    assert stalled.returncode == 0, stalled.stderr
    assert "spooled" in stalled.stderr
    assert stalled_s <= healthy_s + DEADLINE_S + MARGIN_S, (healthy_s, stalled_s)
    assert flaky_store.proxy.requests - seen <= 2  # and no replay at exit
    [key] = _spooled_record_keys()
    flaky_store.proxy.up()
    flushed = _flush(_cli_env(flaky_store))
    assert flushed["remaining"] == 0 and flushed["delivered"] >= 1
    assert Record.from_json(flaky_store.direct.get(key).data).step == "stalled"


def test_replay_at_exit_keeps_the_interpreter_one_deadline_at_most(
    flaky_store: Flaky, tmp_path: Path
) -> None:
    # Spooled with a 60 s store deadline: only the exit's own bound can cut the wait short.
    store = via_proxy(flaky_store, timeout_s=60, **_fail_fast(flaky_store))
    flaky_store.proxy.down()
    assert deliver(store, "records/exit.json", b"{}").spooled
    flaky_store.proxy.hang()
    # The process used the store, as a tracked step does: its SDK is loaded before exit.
    script = (
        "import carbonpipe.stores.background\n"
        + {
            "s3": "import boto3",
            "gcs": "from carbonpipe.stores.gcs import _import_storage; _import_storage()",
            "azure": "from carbonpipe.stores.azure import _import_blob; _import_blob()",
        }[flaky_store.backend]
    )
    env = {**os.environ, "CARBONPIPE_STORE_TIMEOUT_S": f"{DEADLINE_S:g}"}
    empty = {**env, "CARBONPIPE_SPOOL_DIR": str(tmp_path / "empty-spool")}
    base_s, base = timed(lambda: subprocess.run([sys.executable, "-c", script], env=empty))
    exit_s, out = timed(lambda: subprocess.run([sys.executable, "-c", script], env=env))
    assert base.returncode == 0 and out.returncode == 0
    assert flaky_store.proxy.requests >= 1  # the replay did try the hung store
    assert exit_s <= base_s + DEADLINE_S + MARGIN_S, (base_s, exit_s)
    assert [i.key for i in pending()] == ["records/exit.json"]  # nothing lost


# -- the setting ----------------------------------------------------------------------------


def test_store_timeout_s_comes_from_argument_env_or_carbon_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_settings().store_timeout_s == 5.0
    config = tmp_path / "carbon.yaml"
    config.write_text("store_timeout_s: 7\n")
    assert resolve_settings(config_file=str(config)).store_timeout_s == 7.0
    monkeypatch.setenv("CARBONPIPE_STORE_TIMEOUT_S", "2.5")
    settings = resolve_settings(config_file=str(config))
    assert (settings.store_timeout_s, settings.sources["store_timeout_s"]) == (2.5, "env")
    assert resolve_settings(config_file=str(config), store_timeout_s=1).store_timeout_s == 1.0


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0", id="zero"),
        pytest.param("-1", id="negative"),
        pytest.param("soon", id="text"),
        pytest.param("7200", id="too-long"),
    ],
)
def test_a_bad_store_timeout_is_refused_naming_the_setting(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_STORE_TIMEOUT_S", value)
    with pytest.raises(ConfigError, match="store_timeout_s"):
        resolve_settings()
    with pytest.raises(ConfigError, match="store_timeout_s"):
        CarbonTracker()
    with pytest.raises(ValueError, match="timeout_s"):
        open_store("s3://bucket-a/p", timeout_s=value)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["report"], id="report"),
        pytest.param(["budget", "status", "pipeline:p", "--limit-kg", "1"], id="budget-status"),
    ],
)
def test_the_read_commands_give_up_on_a_hung_store_at_the_users_deadline(
    flaky_store: Flaky, command: list[str]
) -> None:
    flaky_store.proxy.hang()
    env = {**_cli_env(flaky_store), "CARBONPIPE_STORE": flaky_store.direct.uri}
    t0 = time.monotonic()
    out = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=120, env=env)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"within {DEADLINE_S:g} s (store_timeout_s)" in out.stderr  # the user's, not 5 s
    # The user's store_timeout_s bounds each call, not the 5 s default: a few calls at most.
    assert took <= 4 * DEADLINE_S + MARGIN_S, took


# -- the exit's waits share one deadline -----------------------------------------------------

_KILLED_STEP = """
import sys, time
from carbonpipe import CarbonTracker
tracker = CarbonTracker(project_name="deadlines", output_dir=sys.argv[1], run_id="killed",
                        cloud_provider="gcp", cloud_region="europe-west1", measure_power_secs=0.5)
with tracker.start_tracking("work"):
    print("started", flush=True)
    time.sleep(600)
"""


def test_a_step_after_a_killed_one_waits_one_deadline_at_exit_in_all(flaky_store: Flaky) -> None:
    """The lost-step sweep and the spool replay at exit share the step's deadline."""
    from carbonpipe.stores.open_steps import entries, read_json, waiting_on

    deadline_s = 4.0
    env = {**_cli_env(flaky_store), "CARBONPIPE_STORE_TIMEOUT_S": f"{deadline_s:g}"}
    cmd = [*CLI, "run", "--store", flaky_store.direct.uri, *WHERE, "--step", "next", "--", "true"]
    base_s, base = timed(lambda: subprocess.run(cmd, capture_output=True, text=True, env=env))
    assert base.returncode == 0, base.stderr
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLED_STEP, flaky_store.direct.uri],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killed.stdout is not None and killed.stdout.readline().strip() == "started"
    killed.kill()
    killed.wait(timeout=30)
    give_up = time.monotonic() + 30
    while any(waiting_on(read_json(p) or {}, p) for p in entries()):
        assert time.monotonic() < give_up, "the killed step's sidecar never went"
        time.sleep(0.1)
    flaky_store.proxy.hang()
    exit_s, out = timed(lambda: subprocess.run(cmd, capture_output=True, text=True, env=env))
    assert out.returncode == 0, out.stderr
    # Waiting a deadline each (the record, then the sweep's lost record) would take 2 x 4 s.
    assert exit_s <= base_s + deadline_s + 3.0, (base_s, exit_s)
    flaky_store.proxy.up()
    flushed = _flush(env)
    assert flushed["remaining"] == 0
    keys = list(flaky_store.direct.list("records/"))
    statuses = sorted(Record.from_json(flaky_store.direct.get(k).data).status for k in keys)
    assert statuses == ["lost", "succeeded", "succeeded"], statuses
