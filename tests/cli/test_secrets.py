"""No secret reaches any output (issue 15 part 5): run, flush and esg, with and without ``-v``.

Distinctive credentials are planted in the environment (an access key, a secret key, a session
token), in the S3 endpoint URL (a password) and in the tracked command's arguments
(``--password=...``). Every command runs as a subprocess against moto, once with the store up
and once with it down (so the record goes through the spool), and every output stream, every
object in the bucket, every file in the spool, its quarantine, the artifacts and the ESG output
folder is searched for each secret.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest

from carbonpipe.stores.spool import spool_dir
from tests.object_servers import free_port, reset_moto

CLI = [sys.executable, "-m", "carbonpipe"]
BUCKET = "secrets-test"
ACCESS_KEY = "AKIAPLANTEDKEY7Q3XZW"
SECRET_KEY = "pLaNtEdSeCrEtKeY/abc+def0123456789XYZ"
SESSION_TOKEN = "FwoGZXIvYXdzPLANTEDSESSIONTOKEN0123456789"
URL_PASSWORD = "s3cr3tpwQ7"
ARG_PASSWORD = "hunter2xyz"
SECRETS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, URL_PASSWORD, ARG_PASSWORD)


def _env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "CARBONPIPE_STORE": f"s3://{BUCKET}/carbon",
        "CARBONPIPE_STORE_TIMEOUT_S": "5",
    }


def _commands(verbose: bool, out: Path) -> list[list[str]]:
    v = ["-v"] if verbose else []
    period = datetime.now(timezone.utc).strftime("%Y-%m")
    tag = "v" if verbose else "q"
    return [
        [
            *v,
            "run",
            "--step",
            f"train-{tag}",
            "--record-json",
            str(out / f"record-{tag}.json"),
            "--metrics-json",
            str(out / f"metrics-{tag}.json"),
            "--",
            sys.executable,
            "-c",
            "pass",
            f"--password={ARG_PASSWORD}",
        ],
        [*v, "flush"],
        [*v, "esg", "--period", period, "--out", str(out / f"esg-{tag}"), "--no-progress"],
    ]


def _run_all(env: dict[str, str], out: Path, cwd: Path) -> list[tuple[str, str]]:
    """Run every command with and without -v; return (what, text) for every stream."""
    texts = []
    for verbose in (False, True):
        for args in _commands(verbose, out):
            done = subprocess.run(
                [*CLI, *args], capture_output=True, text=True, timeout=180, env=env, cwd=cwd
            )
            texts.append((f"{args} stdout", done.stdout))
            texts.append((f"{args} stderr (rc {done.returncode})", done.stderr))
    return texts


def _files(*folders: Path) -> list[tuple[str, str]]:
    found = []
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file():
                found.append((str(path), path.read_bytes().decode("utf-8", "replace")))
    return found


def _bucket_objects(endpoint: str) -> list[tuple[str, str]]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            found.append((f"s3://{BUCKET}/{item['Key']}", body.decode("utf-8", "replace")))
    return found


def _leaks(texts: list[tuple[str, str]]) -> list[str]:
    return [
        f"{secret!r} in {where}" for where, text in texts for secret in SECRETS if secret in text
    ]


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    reset_moto(s3_endpoint)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=BUCKET
    )
    return s3_endpoint


def test_no_secret_in_any_output_with_the_store_up(bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    texts = _run_all(_env(bucket), out, tmp_path)

    objects = _bucket_objects(bucket)
    assert any("/records/" in name for name, _ in objects), [n for n, _ in objects]
    assert any("esg" in name for name, _ in objects + _files(out))
    stderr = "".join(t for w, t in texts if "stderr" in w)
    assert re.search(r"^(DEBUG|INFO) carbonpipe", stderr, re.M)  # -v shows carbonpipe's lines ...
    assert "DEBUG botocore" not in stderr and "DEBUG urllib3" not in stderr  # ... not the SDK's
    assert _leaks(texts + objects + _files(out, tmp_path, spool_dir())) == []


def test_no_secret_in_any_output_with_the_store_down(bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    down = f"http://planted-user:{URL_PASSWORD}@127.0.0.1:{free_port()}"
    texts = _run_all(_env(down), out, tmp_path)

    spooled = _files(spool_dir())
    assert any("/pending/" in name for name, _ in spooled), [n for n, _ in spooled]
    stderr = "".join(t for w, t in texts if "stderr" in w)
    assert "127.0.0.1" in stderr  # the endpoint is named, its userinfo is not
    # The same spool, replayed once the store is back, still keeps every secret out.
    texts += _run_all(_env(bucket), out, tmp_path)
    objects = _bucket_objects(bucket)
    assert sum("/records/" in name for name, _ in objects) >= 4
    assert _leaks(texts + spooled + objects + _files(out, tmp_path, spool_dir())) == []


def test_sdk_debug_logs_only_when_asked_and_still_redacted(bucket: str, tmp_path: Path) -> None:
    env = {**_env(bucket), "CARBONPIPE_DEBUG_SDK": "1"}
    done = subprocess.run(
        [*CLI, "-v", "flush"], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
    )
    done_run = subprocess.run(
        [*CLI, "-v", "run", "--step", "s", "--", sys.executable, "-c", "pass"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )

    assert done.returncode == 0 and done_run.returncode == 0, done.stderr + done_run.stderr
    assert "DEBUG botocore" in done_run.stderr
    assert _leaks([("flush", done.stderr), ("run", done_run.stderr)]) == []


def test_a_password_in_a_store_uri_is_never_echoed(tmp_path: Path) -> None:
    env = {**_env("http://127.0.0.1:1"), "CARBONPIPE_STORE": f"s3://user:{URL_PASSWORD}@bkt/x"}
    texts = []
    for args in (["config"], ["config", "--json"], ["report"], ["-v", "run", "--", "true"]):
        done = subprocess.run(
            [*CLI, *args], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
        )
        texts += [(f"{args} stdout", done.stdout), (f"{args} stderr", done.stderr)]
        if args[0] in ("report", "-v"):
            assert done.returncode == 2 and "s3://" in done.stderr, done.stderr
    assert _leaks(texts) == []
