"""The watermark record of each marked issuance: what ``modelseal trace`` needs, nothing more.

A row holds the issuance's id, who and what it was issued to and when, and the
parameters its mark was embedded with. It holds no key and no model: each
candidate's watermark key is re-derived from the server's watermark secret and the
``jti`` (``docs/WATERMARK.md`` section 1.2), and a bound issuance's transform from the
binding secret, the device id and the ``jti``. The subject and device id are copied
here so that a trace still names them after the issuance's other rows are gone.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.server.db.models import Base

__all__ = ["WatermarkRecord"]


class WatermarkRecord(Base):
    """One marked issuance and the parameters to detect its mark."""

    __tablename__ = "watermarks"
    __table_args__ = (Index("ix_watermarks_model_issued", "model_id", "issued_at"),)

    jti: Mapped[str] = mapped_column(ForeignKey("issuances.jti"), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64))
    user_subject: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(128))
    issued_at: Mapped[int] = mapped_column(BigInteger)
    scheme: Mapped[str] = mapped_column(String(32))
    tensors: Mapped[list[str]] = mapped_column(JSON)
    strength: Mapped[float] = mapped_column(Float)
    density: Mapped[int] = mapped_column(Integer)
    binding: Mapped[str | None] = mapped_column(String(32))
    binding_layer: Mapped[str | None] = mapped_column(String(256))
