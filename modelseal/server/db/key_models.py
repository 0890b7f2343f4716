"""Tables of the key service: every managed signing key and its lifecycle (issue 8).

A row never holds private or secret key material: local keys live in files of the
keyring directory, PKCS#11 keys on the token, and ``handle`` only names them. The
public JWK of an asymmetric key is kept after the private half is destroyed, so
the log of who signed what stays checkable.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.server.db.models import Base

__all__ = ["ManagedKey"]


class ManagedKey(Base):
    """One signing key of one purpose (``issuer``, ``link``, ``checkpoint``).

    ``state`` moves only forward: ``created`` -> ``active`` -> ``retiring`` ->
    ``retired``, and any state but ``retired`` -> ``revoked``.
    """

    __tablename__ = "managed_keys"
    __table_args__ = (
        UniqueConstraint("purpose", "kid"),
        Index("ix_managed_keys_purpose_state", "purpose", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    kid: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(16))
    alg: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    handle: Mapped[str] = mapped_column(String(128))
    public_jwk: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    activated_at: Mapped[int | None] = mapped_column(BigInteger)
    retiring_until: Mapped[int | None] = mapped_column(BigInteger)
    retired_at: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    revoke_reason: Mapped[str | None] = mapped_column(String(256))
