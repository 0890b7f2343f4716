"""Tables of device attestation (issue 7): challenges, results, App Attest counters.

Challenges are random nonces, not secrets: they are stored as issued so that the
verifier can recompute what the platform must have signed. Results keep facts only
(platform, level, key ids, verdict reasons), never evidence blobs or receipts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.server.db.models import Base

__all__ = ["AppAttestKey", "AttestationChallenge", "DeviceAttestation"]


class AttestationChallenge(Base):
    """A single-use challenge issued to one user, valid until ``expires_at``."""

    __tablename__ = "attestation_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    challenge: Mapped[bytes] = mapped_column(LargeBinary(32))
    purpose: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class DeviceAttestation(Base):
    """One verified attestation of a device (the latest one counts for policy)."""

    __tablename__ = "device_attestations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    platform: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(128))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    signals: Mapped[list[str]] = mapped_column(JSON)
    challenge_id: Mapped[str] = mapped_column(String(64))
    verified_at: Mapped[int] = mapped_column(BigInteger)


class AppAttestKey(Base):
    """An attested App Attest key and its assertion counter (strictly increasing)."""

    __tablename__ = "app_attest_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(256))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(65))
    sign_count: Mapped[int] = mapped_column(BigInteger)
    # When the last verified assertion was made, until an IML request spends it.
    unspent_assertion_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
