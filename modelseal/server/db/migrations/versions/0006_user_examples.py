"""User examples: encrypted uploads tied to a user (issue 5).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_examples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_examples_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_examples")),
        sa.UniqueConstraint("record_id", name=op.f("uq_user_examples_record_id")),
    )
    with op.batch_alter_table("user_examples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_user_examples_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_user_examples_user_created", ["user_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("user_examples", schema=None) as batch_op:
        batch_op.drop_index("ix_user_examples_user_created")
        batch_op.drop_index(batch_op.f("ix_user_examples_expires_at"))
    op.drop_table("user_examples")
