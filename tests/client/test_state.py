"""The client's files: private directory, strict state files, outbox, job and download parsing."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from modelseal.client import DeviceClient, Passphrase
from modelseal.client.config import load_config
from modelseal.client.datadir import DataDir, check_model_id, write_private_bytes
from modelseal.client.download import PollPolicy, parse_job
from modelseal.client.errors import (
    AlreadyInitializedError,
    ClientBusyError,
    ClientStateError,
    ModelNotStoredError,
    NotEnrolledError,
    NotInitializedError,
    ProtocolError,
)
from modelseal.client.outbox import MAX_EVENTS, EventType, Outbox
from modelseal.client.store import ModelStore, PendingDownload
from modelseal.errors import UsageError

from .conftest import new_client


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_init_creates_a_private_tree_and_refuses_a_second_client(tmp_path: Path) -> None:
    root = tmp_path / "device"
    client = new_client(root)
    for directory in (root, root / "models", root / "downloads", root / "keys"):
        assert mode(directory) == 0o700, directory
    assert mode(root / "client.json") == 0o600
    assert sorted(p.name for p in (root / "keys").iterdir()) == [
        "kek.credentials.json",
        "kek.models.json",
    ]
    assert client.config.enrollment is None
    with pytest.raises(NotEnrolledError, match="not enrolled") as caught:
        client.fetch("m1")
    assert caught.value.code == "not_enrolled"
    with pytest.raises(AlreadyInitializedError) as again:
        new_client(root)
    assert again.value.code == "client_exists"


def test_a_directory_without_a_client_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    with pytest.raises(NotInitializedError, match="device init") as caught:
        DeviceClient(root, DeviceClient.file_keystore(root, Passphrase("unused", n=2**14)))
    assert caught.value.code == "client_not_initialized"


def test_a_data_directory_open_to_other_users_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "device"
    new_client(root)
    root.chmod(0o755)
    with pytest.raises(ClientStateError, match="open to other users") as caught:
        DataDir(root).check()
    assert caught.value.code == "client_state_invalid"


def test_state_files_open_to_others_or_symlinked_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "device"
    new_client(root)
    config = root / "client.json"
    config.chmod(0o644)
    with pytest.raises(ClientStateError, match="open to other users"):
        load_config(config)
    config.chmod(0o600)
    moved = root / "elsewhere.json"
    config.rename(moved)
    config.symlink_to(moved)
    with pytest.raises(ClientStateError, match="symbolic link"):
        load_config(config)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(extra=1), "must have members"),
        (lambda d: d.update(v=2), "version must be 1"),
        (lambda d: d["keystore"].update(unlock="none"), "unlock = passphrase or keyring"),
        (lambda d: d.update(max_package_bytes=0), "max_package_bytes"),
        (lambda d: d.update(created_at=True), "created_at"),
    ],
)
def test_a_malformed_client_json_is_refused(tmp_path: Path, edit: object, match: str) -> None:
    root = tmp_path / "device"
    new_client(root)
    document = json.loads((root / "client.json").read_text())
    edit(document)  # type: ignore[operator]
    write_private_bytes(root / "client.json", json.dumps(document).encode())
    with pytest.raises(ClientStateError, match=match) as caught:
        load_config(root / "client.json")
    assert caught.value.code == "client_state_invalid"


def test_duplicate_json_members_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "device"
    new_client(root)
    text = (root / "client.json").read_text().replace('"v": 1', '"v": 1, "v": 1')
    write_private_bytes(root / "client.json", text.encode())
    with pytest.raises(ClientStateError, match="duplicate JSON member 'v'"):
        load_config(root / "client.json")


def test_atomic_writes_leave_only_the_target_with_mode_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        target = tmp_path / "file"
        write_private_bytes(target, b"one")
        write_private_bytes(target, b"two")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"two"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_the_data_directory_lock_is_exclusive(tmp_path: Path) -> None:
    root = tmp_path / "device"
    new_client(root)
    with DataDir(root).locked():
        with pytest.raises(ClientBusyError, match="another modelseal client") as caught:
            DataDir(root).locked().__enter__()
        assert caught.value.code == "client_busy"
    with DataDir(root).locked():
        pass


@pytest.mark.parametrize("model_id", ["", ".hidden", "../x", "a/b", "x" * 65, "-a", "a b"])
def test_model_ids_that_could_escape_the_store_are_refused(model_id: str) -> None:
    with pytest.raises(UsageError, match="model id must be"):
        check_model_id(model_id)


def test_download_state_round_trips_and_malformed_state_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "device"
    new_client(root)
    store = ModelStore(DataDir(root))
    state = PendingDownload("m1", "j_1", 1_800_000_000, "abc", 70_000)
    store.save_pending(state)
    assert store.pending("m1") == state
    assert mode(root / "downloads" / "m1.json") == 0o600
    document = state.to_json() | {"total_bytes": -1}
    write_private_bytes(root / "downloads" / "m1.json", json.dumps(document).encode())
    with pytest.raises(ClientStateError, match="malformed"):
        store.pending("m1")
    (root / "downloads" / "m1.part").write_bytes(b"x")
    assert store.discard_download("m1")
    assert not store.discard_download("m1")
    assert list((root / "downloads").iterdir()) == []
    with pytest.raises(ModelNotStoredError) as caught:
        store.delete("m1")
    assert caught.value.code == "model_not_found"


def test_the_outbox_keeps_acks_once_and_caps_events(tmp_path: Path) -> None:
    root = tmp_path / "device"
    new_client(root)
    outbox = Outbox(DataDir(root), clock=lambda: 1_800_000_000)
    outbox.add_ack("j1")
    outbox.add_ack("j1")
    outbox.add_ack("j2")
    outbox.remove_ack("j1")
    assert outbox.acks() == ["j2"]
    for i in range(MAX_EVENTS + 5):
        outbox.record(EventType.TLS_PIN_MISMATCH, host="h", n=i)
    events = outbox.events()
    assert len(events) == MAX_EVENTS
    assert events[0].details["n"] == 5  # the oldest were dropped
    assert events[-1].to_json() == {
        "type": "tls_pin_mismatch",
        "at": 1_800_000_000,
        "details": {"host": "h", "n": MAX_EVENTS + 4},
    }
    outbox.remove_events(events[:-1])
    assert [e.details["n"] for e in outbox.events()] == [MAX_EVENTS + 4]
    assert mode(root / "outbox.json") == 0o600


def test_poll_delays_grow_exponentially_with_bounded_jitter() -> None:
    policy = PollPolicy(initial_seconds=0.1, max_seconds=1.0, multiplier=2.0)
    delays = policy.delays()
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for ceiling in ceilings:
        delay = next(delays)
        assert ceiling / 2 <= delay <= ceiling
    samples = {round(next(delays), 9) for _ in range(20)}
    assert len(samples) > 1  # jittered, not a fixed period
    with pytest.raises(ValueError, match="initial_seconds"):
        PollPolicy(initial_seconds=2, max_seconds=1)


JOB = {
    "job_id": "j_1",
    "status": "ready",
    "model_id": "m1",
    "device_id": "d",
    "created_at": 1,
    "jti": "0123abcd",
    "download_url": "/v1/downloads/eyJ2IjoxfQ.bWFj",
    "link_expires_at": 2,
}


def test_a_ready_job_is_parsed() -> None:
    job = parse_job(dict(JOB))
    assert (job.status, job.jti, job.download_path) == ("ready", "0123abcd", JOB["download_url"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"download_url": "https://evil.example/v1/downloads/x"}, "outside /v1/downloads/"),
        ({"download_url": "//evil.example/v1/downloads/x"}, "outside /v1/downloads/"),
        ({"download_url": "/v1/downloads/../../v1/devices"}, "malformed download link"),
        ({"download_url": "/v1/downloads/a?b=c"}, "malformed download link"),
        ({"job_id": "../devices"}, "invalid job id"),
        ({"jti": "a/b"}, "invalid issuance id"),
        ({"status": "done"}, "unknown status"),
    ],
)
def test_job_documents_that_could_redirect_the_client_are_refused(
    change: dict[str, object], match: str
) -> None:
    with pytest.raises(ProtocolError, match=match) as caught:
        parse_job({**JOB, **change})
    assert caught.value.code == "server_protocol_error"
