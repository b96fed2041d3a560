"""Logs shipped by providers' agents from leased containers, kept 24 hours.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "logs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("deployment_id", sa.BigInteger(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.CheckConstraint("stream IN ('stdout', 'stderr')", name=op.f("ck_logs_stream_known")),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_logs_deployment_id_deployments")
        ),
        sa.ForeignKeyConstraint(["lease_id"], ["leases.id"], name=op.f("fk_logs_lease_id_leases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logs")),
    )
    with op.batch_alter_table("logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_logs_created_ms"), ["created_ms"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_logs_deployment_id_id"), ["deployment_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_logs_deployment_id_id"))
        batch_op.drop_index(batch_op.f("ix_logs_created_ms"))
    op.drop_table("logs")
