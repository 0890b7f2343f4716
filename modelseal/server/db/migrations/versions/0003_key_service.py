"""Key service: managed signing keys and their lifecycle (issue 8).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "managed_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("handle", sa.String(length=128), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("activated_at", sa.BigInteger(), nullable=True),
        sa.Column("retiring_until", sa.BigInteger(), nullable=True),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("revoke_reason", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_managed_keys")),
        sa.UniqueConstraint("purpose", "kid", name=op.f("uq_managed_keys_purpose")),
    )
    with op.batch_alter_table("managed_keys", schema=None) as batch_op:
        batch_op.create_index("ix_managed_keys_purpose_state", ["purpose", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("managed_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_managed_keys_purpose_state")
    op.drop_table("managed_keys")
