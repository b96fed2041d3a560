"""Jobs and lease status reports: a job's next deadline, and what the provider's agent reports of
each lease's container (running with its endpoint, a job's exit code and output, a failure).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_deployments_deadline"), ["deadline"], unique=False)
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), server_default="pending", nullable=False)
        )
        batch_op.add_column(sa.Column("endpoint", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("output", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("status_message", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reported_at", sa.BigInteger(), nullable=True))
        batch_op.create_check_constraint(
            "status_known", "status IN ('pending', 'running', 'finished', 'failed')"
        )


def downgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_leases_status_known"), type_="check")
        for name in ("reported_at", "status_message", "output", "exit_code", "endpoint", "status"):
            batch_op.drop_column(name)
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployments_deadline"))
        batch_op.drop_column("deadline")
