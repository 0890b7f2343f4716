"""The audit service in a running server: what is recorded, atomicity, sequence, checkpoints."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modelseal.audit.checkpoint import open_checkpoint
from modelseal.audit.errors import CanonicalJSONError, SecretFieldError
from modelseal.audit.merkle import leaf_hash
from modelseal.server.db.audit_models import AuditRecord
from modelseal.server.db.models import Issuance
from modelseal.server.services.audit import AuditAction, AuditFilter, export_checkpoint
from tests.server.conftest import Harness, start

from .conftest import verify_services


def actions(server: Harness) -> list[str]:
    return [e.action for e in server.services.audit.entries()]


def test_the_flow_records_every_security_event_with_ids_only(server: Harness) -> None:
    token = server.user("alice")
    device = server.register(token, "phone")
    job = server.issue(token, device)
    body = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
    assert body.status_code == 200
    ack = server.client.post(f"/v1/issuances/{job['jti']}/ack", headers=server.auth(token))
    assert ack.status_code in (200, 204)
    revoke = server.client.delete("/v1/devices/phone", headers=server.auth(token))
    assert revoke.status_code in (200, 204), revoke.text
    recorded = actions(server)
    flow = [a for a in recorded if not a.startswith("key.")]
    assert flow == [
        "admin.action",  # users.create, in the account's own transaction
        "device.registered",
        "iml.requested",
        "iml.issued",
        "link.created",
        "download.completed",
        "issuance.acked",
        "device.revoked",
    ]
    entries = {e.action: e for e in server.services.audit.entries()}
    user_id = entries["device.registered"].user_id
    assert user_id is not None
    for action in flow:
        assert entries[action].user_id == user_id
    issued = entries["iml.issued"]
    assert issued.details["jti"] == job["jti"]
    assert issued.device_id == "phone"
    assert issued.model_id == "m1"
    assert entries["download.completed"].details["lid"] == entries["link.created"].details["lid"]
    assert verify_services(server.services).size == len(recorded)


def test_every_issuance_has_exactly_one_issued_entry(server: Harness) -> None:
    token = server.user("bob")
    device = server.register(token, "tablet")
    jobs = [server.issue(token, device, "m2") for _ in range(3)]
    issued = server.services.audit.entries(AuditFilter(action=AuditAction.IML_ISSUED))
    with server.services.sessions() as session:
        jtis = set(session.scalars(select(Issuance.jti)))
    assert sorted(e.details["jti"] for e in issued) == sorted(jtis)
    assert jtis == {job["jti"] for job in jobs}


def test_an_issuance_cannot_commit_without_its_audit_entry(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = server.user("carol")
    device = server.register(token, "phone")
    audit = server.services.audit
    real_append = audit.append

    def failing_append(session: Any, action: Any, **kwargs: Any) -> int:
        seq = real_append(session, action, **kwargs)  # written, then the commit must fail
        if action == AuditAction.IML_ISSUED:
            raise OSError("audit storage failed")
        return seq

    monkeypatch.setattr(audit, "append", failing_append)
    response = server.client.post(
        "/v1/imls", json={"model_id": "m1", "device_id": "phone"}, headers=server.auth(token)
    )
    job = server.wait_job(token, response.json()["job_id"])
    assert job["status"] == "failed"
    with server.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Issuance)) == 0
    assert AuditAction.IML_ISSUED not in actions(server)
    assert AuditAction.IML_FAILED in actions(server)
    assert list(server.services.settings.blob_dir.glob("[!.]*")) == []
    assert device.device_id == "phone"
    verify_services(server.services)


def test_a_rolled_back_transaction_leaves_no_entry_and_no_gap(server: Harness) -> None:
    services = server.services
    before = services.audit.appended_size()
    with services.sessions() as session:
        session.begin()
        services.audit.append(session, "test.rolled_back", actor="system")
        session.rollback()
    with services.sessions.begin() as session:
        seq = services.audit.append(session, "test.kept", actor="system")
    assert seq == before
    assert "test.rolled_back" not in actions(server)
    verify_services(services)


def test_concurrent_appends_get_gap_free_sequence_numbers(server: Harness) -> None:
    services = server.services
    start_size = services.audit.appended_size()
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(15):
            with services.sessions.begin() as session:
                seq = services.audit.append(
                    session, "test.concurrent", actor=f"t{n}", details={"i": i}
                )
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seqs) == list(range(start_size, start_size + 90))
    assert verify_services(services).size == start_size + 90


@pytest.mark.parametrize(
    "key",
    ["dek", "link_token", "private_key", "password", "token", "secret", "d", "apiSecret", "pin"],
)
def test_secret_looking_detail_keys_are_refused(server: Harness, key: str) -> None:
    services = server.services
    with pytest.raises(SecretFieldError), services.sessions.begin() as session:
        services.audit.append(session, "test.secret", actor="system", details={key: "x"})
    with pytest.raises(SecretFieldError), services.sessions.begin() as session:
        services.audit.append(
            session, "test.secret", actor="system", details={"nested": [{key: "x"}]}
        )


@pytest.mark.parametrize("key", ["token_id", "kid", "key_id", "public_key_kid", "jti", "lid"])
def test_identifier_keys_are_allowed(server: Harness, key: str) -> None:
    services = server.services
    with services.sessions.begin() as session:
        services.audit.append(session, "test.ids", actor="system", details={key: "x"})


def test_values_json_cannot_carry_exactly_are_refused(server: Harness) -> None:
    services = server.services
    with pytest.raises(CanonicalJSONError), services.sessions.begin() as session:
        services.audit.append(session, "test.bad", actor="system", details={"n": 2**60})


def test_checkpoints_are_signed_every_n_entries_and_exported(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    export = tmp_path / "witness"
    for server in start(
        tmp_path, log_stream, audit={"checkpoint_every_entries": 5, "export_dir": str(export)}
    ):
        services = server.services
        for i in range(12):
            with services.sessions.begin() as session:
                services.audit.append(session, "test.n", actor="system", details={"i": i})
        deadline = time.monotonic() + 20
        while not list(export.glob("*.checkpoint")) and time.monotonic() < deadline:
            time.sleep(0.05)
        files = sorted(export.glob("*.checkpoint"))
        assert files, "no checkpoint was exported"
        verifiers = services.audit.recorded_verifiers()
        checkpoint = open_checkpoint(files[0].read_bytes(), verifiers, origin="modelseal-dev/audit")
        assert checkpoint.size >= 5
        assert files[0].name == f"{checkpoint.size:012d}.checkpoint"
        assert oct(files[0].stat().st_mode & 0o777) == "0o644"
    # Shutting down signs what was left.
    last = sorted(export.glob("*.checkpoint"))[-1]
    assert last.name.startswith(f"{services.audit.appended_size():012d}")


def test_checkpoints_are_signed_after_t_seconds(tmp_path: Path, log_stream: io.StringIO) -> None:
    for server in start(tmp_path, log_stream, audit={"checkpoint_every_seconds": 1}):
        services = server.services
        with services.sessions.begin() as session:
            services.audit.append(session, "test.t", actor="system")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if services.audit.stored_checkpoints():
                break
            time.sleep(0.1)
        sizes = [int(where.split(":")[1]) for where, _ in services.audit.stored_checkpoints()]
        assert sizes
        assert max(sizes) == services.audit.appended_size()


def test_an_exported_checkpoint_is_never_overwritten(tmp_path: Path) -> None:
    first = export_checkpoint(tmp_path, 7, b"first\n")
    again = export_checkpoint(tmp_path, 7, b"second\n")
    assert first == again
    assert first.read_bytes() == b"first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["000000000007.checkpoint"]


def test_the_local_checkpoint_key_is_private(server: Harness) -> None:
    services = server.services
    services.audit.checkpoint()
    for path in (services.settings.data_dir / "audit").iterdir():
        if path.name.endswith(".pem"):
            assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((services.settings.data_dir / "audit").stat().st_mode & 0o777) == "0o700"


def test_stored_leaves_match_the_compact_range_the_appender_keeps(server: Harness) -> None:
    services = server.services
    token = server.user("dave")
    server.register(token, "phone")
    checkpoint = services.audit.checkpoint()
    assert checkpoint is not None
    with services.sessions() as session:
        rows = list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))
    from modelseal.audit.merkle import root_hash

    assert root_hash([leaf_hash(r.entry.encode()) for r in rows]) == checkpoint.root
    assert os.path.exists(services.audit.export_dir)


@pytest.mark.parametrize(
    "kwargs",
    [{"actor": ""}, {"actor": "system", "device_id": ""}, {"actor": "x" * 257}],
)
def test_entries_verification_would_refuse_are_refused_when_appended(
    server: Harness, kwargs: dict[str, Any]
) -> None:
    services = server.services
    with pytest.raises(CanonicalJSONError), services.sessions.begin() as session:
        services.audit.append(session, "test.bad", **kwargs)
    with pytest.raises(CanonicalJSONError), services.sessions.begin() as session:
        services.audit.append(session, "a" * 65, actor="system")
