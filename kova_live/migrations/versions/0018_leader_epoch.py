"""A leader and standbys on one PostgreSQL database.

- ``network`` gains ``leader_epoch`` (incremented by each process that becomes the leader, in
  the transaction that says so; every transaction of the leader's writer reads it ``FOR SHARE``
  and fails if it has moved on: a stale leader's writes never land), ``leader_url`` (the
  leader's ``--advertise-url``) and ``leader_since_ms`` (when it took over, Unix ms).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("leader_epoch", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("leader_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("leader_since_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.drop_column("leader_since_ms")
        batch_op.drop_column("leader_url")
        batch_op.drop_column("leader_epoch")
