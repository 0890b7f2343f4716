"""Tables of the abuse controls: quota counters, fraud verdicts and operator overrides.

Imported at the end of :mod:`modelseal.server.db.models`, so the one metadata (and
the migration check) sees them. Migration ``0004_abuse_controls`` creates them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.server.db.models import Base

__all__ = ["AddressUse", "FraudOverride", "FraudVerdict", "QuotaCounter"]


class QuotaCounter(Base):
    """IML requests one user made for one model in one quota period.

    The unique ``(user_id, model_id, period_start)`` lets every process create the
    row with an insert that ignores conflicts, then take one unit with a conditional
    ``UPDATE ... SET used = used + 1 WHERE used < limit``: the database serialises
    the updates, so concurrent requests never exceed the limit.
    """

    __tablename__ = "quota_counters"
    __table_args__ = (UniqueConstraint("user_id", "model_id", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    model_id: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[int] = mapped_column(Integer)


class FraudVerdict(Base):
    """The verdict last computed from a user's events, with its explanation."""

    __tablename__ = "fraud_verdicts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    rules_version: Mapped[str] = mapped_column(String(64))
    fired: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[int] = mapped_column(BigInteger)


class FraudOverride(Base):
    """An operator's verdict for a user, winning over the computed one while active."""

    __tablename__ = "fraud_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(1024))
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    cleared_at: Mapped[int | None] = mapped_column(BigInteger)


class AddressUse(Base):
    """A client address an account used: links accounts that share one (account farms).

    Written at most once per ``event_record_interval_seconds`` per (address, user);
    rows older than ``address_window_seconds`` are ignored, and rows older than
    ``address_retention_seconds`` are deleted by the sweeper.
    """

    __tablename__ = "address_uses"
    __table_args__ = (
        UniqueConstraint("ip", "user_id"),
        Index("ix_address_uses_ip_last_seen", "ip", "last_seen"),
        # An account's own address uses (first-ever arrival, siblings of a blocked account).
        Index("ix_address_uses_user_id_last_seen", "user_id", "last_seen"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ip: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    first_seen: Mapped[int] = mapped_column(BigInteger)
    last_seen: Mapped[int] = mapped_column(BigInteger)
