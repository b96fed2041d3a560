"""The work queue: background work, durable and transactional.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.BigInteger(), nullable=True),
        sa.Column("run_at", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'done')", name=op.f("ck_work_queue_state_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_queue")),
    )
    with op.batch_alter_table("work_queue", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_work_queue_state_run_at"), ["state", "run_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("work_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_queue_state_run_at"))

    op.drop_table("work_queue")
