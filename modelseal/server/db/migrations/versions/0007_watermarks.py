"""Watermarks: per-issuance watermark records for tracing (issue 9).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watermarks",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("user_subject", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("scheme", sa.String(length=32), nullable=False),
        sa.Column("tensors", sa.JSON(), nullable=False),
        sa.Column("strength", sa.Float(), nullable=False),
        sa.Column("density", sa.Integer(), nullable=False),
        sa.Column("binding", sa.String(length=32), nullable=True),
        sa.Column("binding_layer", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(
            ["jti"], ["issuances.jti"], name=op.f("fk_watermarks_jti_issuances")
        ),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_watermarks")),
    )
    with op.batch_alter_table("watermarks", schema=None) as batch_op:
        batch_op.create_index("ix_watermarks_model_issued", ["model_id", "issued_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("watermarks", schema=None) as batch_op:
        batch_op.drop_index("ix_watermarks_model_issued")
    op.drop_table("watermarks")
