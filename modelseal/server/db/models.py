"""Tables of the issuance server (typed ``Mapped[]`` declarative models).

No table holds plaintext models or link tokens. API token secrets are stored only
as Argon2id hashes. Users appear in issued packages only by ``subject``, a random
pseudonymous id, never by name or provider subject.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiToken",
    "Base",
    "Device",
    "DownloadLink",
    "Event",
    "Issuance",
    "Job",
    "LinkUse",
    "User",
]

# Stable constraint names, so migrations behave the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """An account: built-in (``provider = "local"``) or provisioned from an OIDC subject."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("provider", "provider_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(128), unique=True)
    provider: Mapped[str] = mapped_column(String(256))
    provider_subject: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger)
    disabled_at: Mapped[int | None] = mapped_column(BigInteger)


class ApiToken(Base):
    """A built-in API token ``ms_<token_id>_<secret>``; only the secret's Argon2id hash."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class Device(Base):
    """A device key pinned to (user, device id). ``kid`` is unique across all devices."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "device_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    kem: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    app_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class Job(Base):
    """An IML request: queued -> running -> ready | failed."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    model_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    jti: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    # The server process (jobs.registry) whose in-memory queue holds the job.
    runner_id: Mapped[str | None] = mapped_column(String(32))


class Issuance(Base):
    """One sealed package: who it was issued to and where its ciphertext lives."""

    __tablename__ = "issuances"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    model_id: Mapped[str] = mapped_column(String(64))
    package_id: Mapped[str] = mapped_column(String(64))
    issuer_kid: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    licence_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    blob_expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    acked_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted_reason: Mapped[str | None] = mapped_column(String(16))


class DownloadLink(Base):
    """A minted download link (the token itself is never stored: it is re-derivable)."""

    __tablename__ = "download_links"

    lid: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(ForeignKey("issuances.jti"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class LinkUse(Base):
    """The one complete use of a link; the unique ``lid`` makes links single-use."""

    __tablename__ = "link_uses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lid: Mapped[str] = mapped_column(ForeignKey("download_links.lid"), unique=True)
    used_at: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """A security-relevant event, from the server or reported by the app."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    device_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)


# Tables of other areas register on the same metadata (imported last: they use Base).
from modelseal.server.db import abuse_models as abuse_models  # noqa: E402
from modelseal.server.db import attestation_models as attestation_models  # noqa: E402
from modelseal.server.db import audit_models as audit_models  # noqa: E402
from modelseal.server.db import examples_models as examples_models  # noqa: E402
from modelseal.server.db import key_models as key_models  # noqa: E402
from modelseal.server.db import runner_models as runner_models  # noqa: E402
from modelseal.server.db import watermark_models as watermark_models  # noqa: E402
