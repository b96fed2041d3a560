"""Deployments' escrow history.

- ``escrow_points`` (deployment_id, height, escrow, burn_rate): a point at each batch that moved
  a deployment's escrow other than by a round's routine payments, or changed its burn rate;
  what the console's escrow chart draws (``GET /v1/deployments/{id}/escrow``). Deployments
  made before this revision have no points until their next such batch.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "escrow_points",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("deployment_id", sa.BigInteger(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("escrow", sa.BigInteger(), nullable=False),
        sa.Column("burn_rate", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"],
            name=op.f("fk_escrow_points_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escrow_points")),
    )
    op.create_index(
        op.f("ix_escrow_points_deployment_id_id"), "escrow_points", ["deployment_id", "id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_escrow_points_deployment_id_id"), table_name="escrow_points")
    op.drop_table("escrow_points")
