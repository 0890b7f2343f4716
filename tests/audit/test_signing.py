"""The log signs only what is stored, and only trees that extend what it signed before."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, update

from modelseal.audit.errors import LogVerificationError
from modelseal.audit.merkle import CompactRange, leaf_hash
from modelseal.server.container import Services
from modelseal.server.db.audit_models import AUDIT_STATE_ID, AuditRecord, AuditState
from modelseal.server.services.audit import AuditLog

from .conftest import verify_services


def append(services: Services, count: int, tag: str = "t") -> None:
    for i in range(count):
        with services.sessions.begin() as session:
            services.audit.append(session, "test.sign", actor="system", details={tag: i})


def exported(services: Services) -> list[str]:
    return sorted(p.name for p in services.audit.export_dir.glob("*.checkpoint"))


def test_a_forged_appender_state_is_not_signed(services: Services) -> None:
    append(services, 5)
    assert services.audit.checkpoint() is not None
    before = exported(services)
    append(services, 3)
    # Someone with write access to audit_state points the tree at other leaves.
    forged = CompactRange()
    for i in range(services.audit.appended_size()):
        forged.append(leaf_hash(b"forged %d" % i))
    with services.sessions.begin() as session:
        session.execute(
            update(AuditState)
            .where(AuditState.id == AUDIT_STATE_ID)
            .values(frontier=[h.hex() for h in forged.hashes])
        )
    with pytest.raises(LogVerificationError) as caught:
        services.audit.checkpoint()
    assert caught.value.code == "audit_root_mismatch"
    assert exported(services) == before
    assert len(services.audit.stored_checkpoints()) == 1


def test_a_rewrite_under_the_last_checkpoint_is_not_signed_by_a_new_process(
    services: Services,
) -> None:
    append(services, 6)
    assert services.audit.checkpoint() is not None
    append(services, 2)
    # Entry 2 is rewritten and the appender's state recomputed to match: a fresh
    # process (no tree in memory) rebuilds the tree and finds the signed root differs.
    with services.sessions.begin() as session:
        row = session.get(AuditRecord, 2)
        assert row is not None
        row.entry = row.entry.replace('"actor":"system"', '"actor":"someone"')
        assert '"someone"' in row.entry
    tree = CompactRange()
    with services.sessions() as session:
        for row in session.query(AuditRecord).order_by(AuditRecord.seq):
            tree.append(leaf_hash(row.entry.encode()))
    with services.sessions.begin() as session:
        session.execute(
            update(AuditState)
            .where(AuditState.id == AUDIT_STATE_ID)
            .values(frontier=[h.hex() for h in tree.hashes])
        )
    fresh = AuditLog(services.sessions, services.settings, services.clock)
    with pytest.raises(LogVerificationError):
        fresh.checkpoint()
    assert len(services.audit.stored_checkpoints()) == 1


def test_a_missing_entry_is_not_signed(services: Services) -> None:
    append(services, 4)
    with services.sessions.begin() as session:
        session.execute(delete(AuditRecord).where(AuditRecord.seq == 1))
    with pytest.raises(LogVerificationError) as caught:
        services.audit.checkpoint()
    assert caught.value.code == "audit_sequence_gap"
    assert exported(services) == []


def test_checkpoints_keep_extending_across_processes(services: Services) -> None:
    for round_ in range(3):
        append(services, 3 + round_, tag=f"r{round_}")
        assert services.audit.checkpoint() is not None
        # A second process signs the next one from a tree it rebuilt.
        append(services, 2, tag=f"s{round_}")
        other = AuditLog(services.sessions, services.settings, services.clock)
        assert other.checkpoint() is not None
    report = verify_services(services)
    assert len(report.checkpoints) == 6
    assert report.covered == report.size
