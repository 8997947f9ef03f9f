"""The spool's confinement: planted or altered envelopes, loose spool folders, keys that escape.

Issue 15 part 4e: a planted spool entry made an unrelated tracked step write a file outside any
store. Each test plants files as an attacker would and runs the commands a user runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carbonpipe.errors import KeyOutsideStore, UnsafeFolder
from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.spool import ENVELOPE_SCHEMA, deliver, replay, spool_dir

CLI = [sys.executable, "-m", "carbonpipe"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=180, env=dict(os.environ), cwd=cwd
    )


def _plant(store: str, key: str, data: bytes, name: str, mac: str | None = None) -> Path:
    """Write an envelope into pending/ as an attacker would: right schema, no (or a forged) seal."""
    envelope = {
        "schema": ENVELOPE_SCHEMA,
        "store": store,
        "store_options": {},
        "key": key,
        "content_type": "application/octet-stream",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "spooled_at": "2026-01-01T00:00:00Z",
        "error": "",
        "data_b64": base64.b64encode(data).decode(),
    }
    if mac is not None:
        envelope["mac"] = mac
    pending = spool_dir() / "pending"
    pending.mkdir(parents=True, exist_ok=True)
    path = pending / f"{name}.json"
    path.write_text(json.dumps(envelope))
    return path


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_planted_envelopes_are_quarantined_and_never_written_anywhere(tmp_path: Path) -> None:
    home = tmp_path / "home"
    autostart = home / ".config" / "autostart"
    autostart.mkdir(parents=True)
    store_root = tmp_path / "carbon-artifacts"
    never_used = tmp_path / "elsewhere" / "a" / "b"
    payload = b"[Desktop Entry]\nExec=sh -c 'echo pwned'\n"
    # A key escaping a store folder, a plain key into a folder this user never used, a forged
    # seal, and an unsealed object aimed at the very store the user configured.
    _plant(str(never_used), "../../../home/.config/autostart/x.desktop", payload, "escape")
    _plant(str(autostart), "x.desktop", payload, "autostart")
    _plant(str(autostart), "y.desktop", payload, "forged", mac="0" * 64)
    _plant(str(store_root), "records/planted.json", b"{}", "configured")
    before = _files_under(tmp_path) - _files_under(spool_dir())

    step = _cli(
        "run", "--store", str(store_root), "--step", "unrelated", "--", "true", cwd=tmp_path
    )
    assert step.returncode == 0, step.stderr
    flush = _cli("flush", "--json", cwd=tmp_path)

    assert flush.returncode == 1, flush.stdout + flush.stderr
    report = json.loads(flush.stdout)
    reasons = {Path(q["path"]).name: q for q in report["quarantine"]}
    assert set(reasons) == {"escape.json", "autostart.json", "forged.json", "configured.json"}
    assert reasons["escape.json"]["reason"] == "unreadable"
    assert "is invalid" in reasons["escape.json"]["error"]
    for name in ("autostart.json", "forged.json", "configured.json"):
        assert reasons[name]["reason"] == "untrusted", reasons[name]
        assert "seal" in reasons[name]["error"]
    assert "no seal" in reasons["autostart.json"]["error"]
    assert "planted or altered" in reasons["forged.json"]["error"]
    # Nothing was written outside the configured store and the spool; the store got the step's
    # own record and nothing planted.
    after = _files_under(tmp_path) - _files_under(spool_dir())
    new = {p for p in after - before if not p.is_relative_to(store_root)}
    assert new == set()
    assert list(autostart.iterdir()) == []
    assert not never_used.exists()
    stored = sorted(str(p.relative_to(store_root)) for p in _files_under(store_root))
    assert not (store_root / "records" / "planted.json").exists()
    assert any("unrelated" in s for s in stored), stored
    # Quarantined entries are kept (never deleted) and stay untrusted after a retry.
    retry = _cli("flush", "--retry-quarantined", "--json", cwd=tmp_path)
    assert retry.returncode == 1
    assert len(json.loads(retry.stdout)["quarantine"]) == 4
    assert list(autostart.iterdir()) == []


def test_an_altered_envelope_is_quarantined_its_genuine_neighbour_delivered(tmp_path: Path) -> None:
    down = tmp_path / "down"
    down.write_text("a file where the store folder should be")
    for key in ("records/a.json", "records/b.json"):
        assert deliver(LocalStore(down), key, b'{"ok": 1}').spooled
    down.unlink()
    pending = sorted((spool_dir() / "pending").glob("*.json"))
    envelope = json.loads(pending[0].read_text())
    target = tmp_path / "redirected"
    envelope["store"] = str(target)  # an attacker re-aims a genuine envelope
    pending[0].write_text(json.dumps(envelope))

    report = replay()

    assert (report.delivered, report.newly_quarantined) == (1, 1)
    assert report.quarantined[0].reason == "untrusted"
    assert not target.exists()
    assert len(list(down.rglob("*.json"))) == 1


def test_a_loose_spool_is_refused_by_flush_naming_the_folder_and_the_fix(tmp_path: Path) -> None:
    spool = spool_dir()
    spool.mkdir(parents=True, exist_ok=True)
    os.chmod(spool, 0o777)

    flush = _cli("flush")

    assert flush.returncode == 2
    assert str(spool) in flush.stderr and f"chmod 700 {spool}" in flush.stderr
    assert "writable by other users" in flush.stderr
    with pytest.raises(UnsafeFolder):
        replay()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")
def test_a_spool_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    spool = spool_dir()
    spool.mkdir(parents=True, exist_ok=True)
    os.chmod(spool, 0o700)
    os.chown(spool, 12345, 12345)

    flush = _cli("flush")

    assert flush.returncode == 2
    assert "owned by uid 12345" in flush.stderr and str(spool) in flush.stderr


def test_a_new_spool_is_private(tmp_path: Path) -> None:
    down = tmp_path / "down"
    down.write_text("")
    assert deliver(LocalStore(down), "records/a.json", b"{}").spooled
    assert (spool_dir().stat().st_mode & 0o777) == 0o700
    key_mode = (spool_dir() / "spool.key").stat().st_mode & 0o777
    assert key_mode == 0o600


def test_a_step_with_a_loose_spool_still_writes_its_record_and_spools_nothing(
    tmp_path: Path,
) -> None:
    spool = spool_dir()
    spool.mkdir(parents=True, exist_ok=True)
    os.chmod(spool, 0o777)
    store_root = tmp_path / "store"

    up = _cli("run", "--store", str(store_root), "--step", "s", "--", "true", cwd=tmp_path)
    down_root = tmp_path / "down"
    down_root.write_text("")  # the store cannot be written: the record would go to the spool
    down = _cli("run", "--store", str(down_root), "--step", "s", "--", "true", cwd=tmp_path)

    assert up.returncode == 0 and down.returncode == 0
    assert list(store_root.rglob("records/**/*.json"))
    assert _files_under(spool) == set()  # nothing was written into the unsafe folder
    assert "could not be written or spooled" in down.stderr
    assert f"chmod 700 {spool}" in down.stderr


def test_local_store_refuses_keys_that_resolve_outside_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    root.mkdir()
    (root / "records").symlink_to(outside)
    store = LocalStore(root)

    for key in ("records/x.json", "../outside/x.json", "/etc/x.json"):
        with pytest.raises(KeyOutsideStore):
            store.put_if_absent(key, b"{}")
    with pytest.raises(KeyOutsideStore):
        store.get("records/x.json")
    assert list(outside.iterdir()) == []
    # The spool quarantines such an object instead of retrying it forever.
    delivery = deliver(store, "records/x.json", b"{}")
    assert delivery.spooled and delivery.spool_path is not None
    assert Path(delivery.spool_path).parent.name == "quarantine"
    assert list(outside.iterdir()) == []


def test_records_follow_the_umask_so_teammates_can_read_them(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = LocalStore(tmp_path / "store")
        store.put_if_absent("records/a.json", b"{}")
        store.put_artifact("reports/r.html", b"<p>", content_type="text/html")
    finally:
        os.umask(old)
    assert (tmp_path / "store" / "records" / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "store" / "reports" / "r.html").stat().st_mode & 0o777 == 0o644


def test_a_missing_spool_is_nothing_to_flush(tmp_path: Path) -> None:
    assert replay().remaining == 0
    assert not spool_dir().exists()  # a replay creates nothing
    flush = _cli("flush")
    assert flush.returncode == 0, flush.stderr
    if spool_dir().exists():  # the lost-step sweep may make it: private from the start
        assert spool_dir().stat().st_mode & 0o777 == 0o700


def test_a_planted_open_step_entry_is_never_acted_on(tmp_path: Path) -> None:
    # An entry whose owner is long gone, naming a store folder this user never used: a sweep
    # would write the step's "lost" record there.
    target = tmp_path / "home" / ".config" / "autostart"
    entry = {
        "schema": "carbonpipe.open_step/1",
        "record_id": "0123456789abcdef0123456789abcdef",
        "identity": {
            "record_id": "0123456789abcdef0123456789abcdef",
            "project": "p",
            "experiment": "e",
            "pipeline": "p",
            "run_id": "r",
            "step": "s",
            "team": "t",
            "attempt": 1,
            "labels": {},
        },
        "started_at": "2026-01-01T00:00:00Z",
        "owner": {"pid": 999_999_999, "start_ticks": 1, "boot_id": "gone", "pid_ns": None},
        "store": str(target),
        "store_options": {},
    }
    folder = spool_dir() / "open"
    folder.mkdir(parents=True)
    planted = folder / f"{entry['record_id']}.json"
    planted.write_text(json.dumps(entry))

    flush = _cli("flush", "--json", cwd=tmp_path)

    assert flush.returncode == 1, flush.stdout + flush.stderr
    [failed] = json.loads(flush.stdout)["lost_steps"]["failed"]
    assert "without a valid seal" in failed and str(planted) in failed
    assert not target.exists()
    assert planted.exists()  # left for the user to inspect


def test_an_older_carbonpipes_unsealed_entries_are_delivered_once_the_user_trusts_them(
    tmp_path: Path,
) -> None:
    # Spooled before the seal existed: genuine, but unsealed. Flush quarantines it as untrusted
    # (as it would a planted one); `flush --trust-unsealed` seals and delivers it. A forged seal
    # stays in the quarantine whatever the flag.
    store = tmp_path / "store"
    _plant(str(store), "records/old.json", b'{"old": 1}', "old")
    _plant(str(store), "records/forged.json", b'{"forged": 1}', "forged", mac="0" * 64)

    first = _cli("flush", "--json")
    assert first.returncode == 1, first.stderr
    reasons = {q["key"]: q["reason"] for q in json.loads(first.stdout)["quarantine"]}
    assert reasons == {"records/old.json": "untrusted", "records/forged.json": "untrusted"}
    assert not store.exists()

    trusted = _cli("flush", "--trust-unsealed", "--json")
    assert trusted.returncode == 1, trusted.stderr  # the forged one is still held
    report = json.loads(trusted.stdout)
    assert report["delivered"] == 1
    assert [q["key"] for q in report["quarantine"]] == ["records/forged.json"]
    assert (store / "records" / "old.json").read_bytes() == b'{"old": 1}'
    assert not (store / "records" / "forged.json").exists()
