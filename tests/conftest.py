"""Session-wide test setup: isolate every test from the user's caches, clouds and stores.

Real servers (moto's S3, fake-gcs-server, metadata servers) are started once per session by
the fixture modules listed in ``pytest_plugins``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.airflow_env  # noqa: F401  (sets AIRFLOW_HOME before any test imports airflow)

pytest_plugins = ["tests.object_servers", "tests.fault_proxy", "tests.azurite"]

# Nothing in the suite may ever reach the real link-local metadata address: point every SDK
# endpoint at a closed loopback port and switch probing off unless a test turns it on.
_SAFE_ENV = {
    "CARBONPIPE_CLOUD_DETECTION": "off",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9/",
    "AWS_EC2_METADATA_DISABLED": "true",
    "CARBONPIPE_AZURE_IMDS_ENDPOINT": "http://127.0.0.1:9/",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NO_PROXY": "127.0.0.1,localhost",
    # Live grid-intensity APIs: a closed loopback port unless a test names its own server.
    "ELECTRICITYMAPS_API_URL": "http://127.0.0.1:9",
    "WATTTIME_API_URL": "http://127.0.0.1:9",
    "CARBON_AWARE_SDK_URL": "http://127.0.0.1:9",
    "CARBONPIPE_UK_INTENSITY_URL": "http://127.0.0.1:9",
}
os.environ.update(_SAFE_ENV)


# One cache folder for the session, warmed once: CodeCarbon's hardware detection costs ~2 s per
# empty cache. Tests of the cache itself point CARBONPIPE_CACHE_DIR at a folder of their own.
_hardware_cache = Path(tempfile.mkdtemp(prefix="carbonpipe-cache-"))
# Hypothesis keeps its caches in ./.hypothesis unless told otherwise: tests write only under tmp.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(_hardware_cache / "hypothesis"))


def _keep_other_threads_off_the_global_random() -> None:
    """Let threads other than the main one draw from their own generator.

    Hypothesis refuses a draw during which the global ``random`` state changed; SDK retry
    loops (backoff jitter through ``random.random``/``uniform``) left running by an earlier
    test's abandoned store call can change it from another thread at any moment.
    """
    import random
    import threading

    own = random.Random()
    for name in ("random", "uniform", "randint", "randrange", "choice", "choices", "shuffle",
                 "sample", "getrandbits", "gauss", "expovariate", "triangular"):  # fmt: skip
        setattr(random, name, _per_thread(getattr(random, name), getattr(own, name), threading))


def _per_thread(original: Any, own: Any, threading: Any) -> Any:
    def per_thread(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            return original(*args, **kwargs)
        return own(*args, **kwargs)

    return per_thread


_keep_other_threads_off_the_global_random()


@pytest.fixture(scope="session", autouse=True)
def _warm_hardware_profile() -> Iterator[Path]:
    """Run CodeCarbon's slow hardware detection once for the whole session."""
    from carbonpipe.measure.meter import warm_hardware_profile

    warm_hardware_profile(cache_dir=_hardware_cache)
    yield _hardware_cache
    shutil.rmtree(_hardware_cache, ignore_errors=True)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _working_tree_untouched() -> Iterator[None]:
    """Fail the run when the suite left a file in the repository (tests write under tmp only).

    ``CARBONPIPE_TEST_TREE_GUARD=off`` turns it off (e.g. while other tools write there).
    """
    from tests.tree_guard import created, snapshot

    if os.environ.get("CARBONPIPE_TEST_TREE_GUARD") == "off":
        yield
        return
    before = snapshot(REPO)
    yield
    left = created(before, snapshot(REPO))
    if left:
        pytest.fail(
            "the test suite wrote into the repository (tests must write under tmp_path): "
            + ", ".join(left[:20])
            + (f" and {len(left) - 20} more" if len(left) > 20 else ""),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _isolated_carbonpipe_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Give each test its own cache and spool folders and no stray CARBONPIPE_* settings."""
    home = tmp_path_factory.mktemp("cphome")
    for name in list(os.environ):
        if name.startswith("CARBONPIPE_") and name not in _SAFE_ENV:
            monkeypatch.delenv(name, raising=False)
    for name, value in _SAFE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(_hardware_cache))
    monkeypatch.setenv("CARBONPIPE_SPOOL_DIR", str(home / "spool"))
    monkeypatch.setenv("CARBONPIPE_CONFIG", str(home / "no-carbon.yaml"))
    from carbonpipe.stores import breaker

    breaker.new_step()  # store calls that failed in an earlier test are not this test's wait
    yield home
