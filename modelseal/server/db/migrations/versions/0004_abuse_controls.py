"""Abuse controls: quotas, fraud verdicts and overrides, honey tokens (issue 6).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_counters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_quota_counters_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_counters")),
        sa.UniqueConstraint(
            "user_id", "model_id", "period_start", name=op.f("uq_quota_counters_user_id")
        ),
    )
    op.create_table(
        "fraud_verdicts",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("rules_version", sa.String(length=64), nullable=False),
        sa.Column("fired", sa.JSON(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_fraud_verdicts_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_fraud_verdicts")),
    )
    op.create_table(
        "fraud_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("cleared_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_fraud_overrides_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_overrides")),
    )
    with op.batch_alter_table("fraud_overrides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fraud_overrides_user_id"), ["user_id"], unique=False)

    op.create_table(
        "address_uses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_address_uses_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_uses")),
        sa.UniqueConstraint("ip", "user_id", name=op.f("uq_address_uses_ip")),
    )
    with op.batch_alter_table("address_uses", schema=None) as batch_op:
        batch_op.create_index("ix_address_uses_ip_last_seen", ["ip", "last_seen"], unique=False)
        batch_op.create_index(
            "ix_address_uses_user_id_last_seen", ["user_id", "last_seen"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("address_uses", schema=None) as batch_op:
        batch_op.drop_index("ix_address_uses_user_id_last_seen")
        batch_op.drop_index("ix_address_uses_ip_last_seen")
    op.drop_table("address_uses")
    with op.batch_alter_table("fraud_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fraud_overrides_user_id"))
    op.drop_table("fraud_overrides")
    op.drop_table("fraud_verdicts")
    op.drop_table("quota_counters")
