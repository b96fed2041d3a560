"""Deployments, jobs and their orders.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("max_runtime", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("closed_at", sa.BigInteger, nullable=True),
        sa.Column("close_reason", sa.String(24), nullable=True),
        sa.Column("written_off", sa.BigInteger, nullable=False),
        sa.CheckConstraint("kind IN ('deployment', 'job')", name=op.f("ck_deployments_kind_known")),
        sa.CheckConstraint(
            "state IN ('active', 'insufficient_funds', 'closed')",
            name=op.f("ck_deployments_state_known"),
        ),
        sa.CheckConstraint(
            "written_off >= 0", name=op.f("ck_deployments_written_off_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["accounts.id"], name=op.f("fk_deployments_tenant_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_index(op.f("ix_deployments_tenant_id_id"), "deployments", ["tenant_id", "id"])
    op.create_table(
        "orders",
        sa.Column("id", ID, primary_key=True),
        sa.Column("deployment_id", sa.BigInteger, nullable=False),
        sa.Column("spec_index", sa.Integer, nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("replica", sa.Integer, nullable=False),
        sa.Column("cpu", sa.BigInteger, nullable=False),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("storage", sa.BigInteger, nullable=False),
        sa.Column("gpu", sa.Integer, nullable=False),
        sa.Column("max_price", sa.BigInteger, nullable=False),
        sa.Column("denom", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("closed_at", sa.BigInteger, nullable=True),
        sa.Column("close_reason", sa.String(24), nullable=True),
        sa.CheckConstraint(
            "state IN ('open', 'matched', 'closed')", name=op.f("ck_orders_state_known")
        ),
        sa.CheckConstraint("max_price > 0", name=op.f("ck_orders_max_price_positive")),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_orders_deployment_id_deployments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    op.create_index(op.f("ix_orders_state_id"), "orders", ["state", "id"])
    op.create_index(op.f("ix_orders_deployment_id"), "orders", ["deployment_id"])


def downgrade() -> None:
    op.drop_table("orders")
    op.drop_table("deployments")
