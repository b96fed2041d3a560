"""Auto-accept, and providers' pricing: a deployment may carry a selection policy with which the
orchestrator accepts bids for its tenant; a provider's heartbeat may say which pricing strategy
its agent bids with, so that candidates can tell a tenant who asks more than its ceiling.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auto_accept", sa.Text(), nullable=True))
    with op.batch_alter_table("provider_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pricing", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provider_nodes", schema=None) as batch_op:
        batch_op.drop_column("pricing")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("auto_accept")
