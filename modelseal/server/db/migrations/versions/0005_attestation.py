"""Device attestation: challenges, results, assertion counters (issue 7).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attestation_challenges",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("challenge", sa.LargeBinary(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_attestation_challenges_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attestation_challenges")),
    )
    with op.batch_alter_table("attestation_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attestation_challenges_user_id"), ["user_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_attestation_challenges_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "device_attestations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("level", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("challenge_id", sa.String(length=64), nullable=False),
        sa.Column("verified_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"], ["devices.id"], name=op.f("fk_device_attestations_device_pk_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_attestations")),
    )
    with op.batch_alter_table("device_attestations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_attestations_device_pk"), ["device_pk"], unique=False
        )
    op.create_table(
        "app_attest_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.String(length=256), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=65), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("unspent_assertion_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"], ["devices.id"], name=op.f("fk_app_attest_keys_device_pk_devices")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_app_attest_keys")),
    )
    with op.batch_alter_table("app_attest_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_app_attest_keys_device_pk"), ["device_pk"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("app_attest_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_attest_keys_device_pk"))
    op.drop_table("app_attest_keys")
    with op.batch_alter_table("device_attestations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_attestations_device_pk"))
    op.drop_table("device_attestations")
    with op.batch_alter_table("attestation_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attestation_challenges_expires_at"))
        batch_op.drop_index(batch_op.f("ix_attestation_challenges_user_id"))
    op.drop_table("attestation_challenges")
