"""Tables of the audit log (issue 8): entries, the appender's state, checkpoints.

``audit_entries`` and ``audit_checkpoints`` are append-only: on PostgreSQL a trigger
refuses UPDATE, DELETE and TRUNCATE on them (migration 0002), and the application
role is granted only INSERT and SELECT (docs/AUDIT.md). ``audit_state`` is the one
mutable row: the next sequence number, the last leaf hash and the right edge of the
Merkle tree, updated in the same transaction as each append (its row lock is what
makes sequence numbers gap-free under concurrency).

No column holds a secret: entries carry identifiers only.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.server.db.models import Base

__all__ = ["AUDIT_STATE_ID", "AuditCheckpointRow", "AuditRecord", "AuditState"]

AUDIT_STATE_ID = 1


class AuditRecord(Base):
    """One audit entry: its canonical JSON, and copies of a few members for filtering."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_user_created", "user_id", "created_at"),
        Index("ix_audit_entries_device_created", "device_id", "created_at"),
        Index("ix_audit_entries_model_created", "model_id", "created_at"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(256))
    user_id: Mapped[int | None] = mapped_column(Integer)
    device_id: Mapped[str | None] = mapped_column(String(256))
    model_id: Mapped[str | None] = mapped_column(String(256))
    entry: Mapped[str] = mapped_column(Text)


class AuditState(Base):
    """The appender's state (a single row, id 1)."""

    __tablename__ = "audit_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    frontier: Mapped[list[str]] = mapped_column(JSON)


class AuditCheckpointRow(Base):
    """A signed checkpoint (C2SP tlog-checkpoint note), one per tree size."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text)
