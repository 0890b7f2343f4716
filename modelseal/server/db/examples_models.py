"""Users' uploaded personalisation examples, encrypted at rest (issue 5).

A row is one upload. ``ciphertext`` is ``nonce || AES-256-GCM(examples)`` under the
server's examples key, with the user's id and the row's ``record_id`` as associated
data, so a row copied to another user or another record does not decrypt
(:mod:`modelseal.server.services.examples`). The database never holds the examples
in the clear; ``key_id`` names the key a row was sealed under. Rows go when they
expire (``expires_at``, swept), when the user deletes them, and with the user.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.server.db.models import Base

__all__ = ["UserExamples"]


class UserExamples(Base):
    """One upload of a user's examples, sealed under the server's examples key."""

    __tablename__ = "user_examples"
    __table_args__ = (Index("ix_user_examples_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    count: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(16))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
