"""Provider nodes, bids, leases and settlement rounds.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_rounds",
        sa.Column("height", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("deployments_paid", sa.Integer(), nullable=False),
        sa.Column("deployments_paused", sa.Integer(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("height", name=op.f("pk_settlement_rounds")),
    )
    op.create_table(
        "provider_nodes",
        sa.Column("provider_id", sa.BigInteger(), nullable=False),
        sa.Column("cpu", sa.BigInteger(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("storage", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("gpu_models", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "state IN ('online', 'lost')", name=op.f("ck_provider_nodes_state_known")
        ),
        sa.CheckConstraint(
            "cpu >= 0 AND memory >= 0 AND storage >= 0 AND gpu >= 0",
            name=op.f("ck_provider_nodes_capacity"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["accounts.id"], name=op.f("fk_provider_nodes_provider_id_accounts")
        ),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_provider_nodes")),
    )
    op.create_table(
        "bids",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("provider_id", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("response_time", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "state IN ('open', 'accepted', 'lost', 'withdrawn')", name=op.f("ck_bids_state_known")
        ),
        sa.CheckConstraint("price > 0", name=op.f("ck_bids_price_positive")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_bids_order_id_orders")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["accounts.id"], name=op.f("fk_bids_provider_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bids")),
    )
    with op.batch_alter_table("bids", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bids_order_id_state"), ["order_id", "state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_bids_provider_id_state"), ["provider_id", "state"], unique=False
        )
        batch_op.create_index(
            "uq_bids_open_per_provider",
            ["order_id", "provider_id"],
            unique=True,
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )

    op.create_table(
        "leases",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("deployment_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("provider_id", sa.BigInteger(), nullable=False),
        sa.Column("bid_id", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("cpu", sa.BigInteger(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("storage", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_settled", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("debt_start", sa.BigInteger(), nullable=False),
        sa.Column("debt_end", sa.BigInteger(), nullable=False),
        sa.Column("blocks_paid", sa.BigInteger(), nullable=False),
        sa.Column("total_paid", sa.BigInteger(), nullable=False),
        sa.Column("written_off", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.Column("close_reason", sa.String(length=24), nullable=True),
        sa.CheckConstraint(
            "state IN ('active', 'insufficient_funds', 'closed')",
            name=op.f("ck_leases_state_known"),
        ),
        sa.CheckConstraint(
            "debt >= 0 AND total_paid >= 0 AND written_off >= 0", name=op.f("ck_leases_money")
        ),
        sa.ForeignKeyConstraint(["bid_id"], ["bids.id"], name=op.f("fk_leases_bid_id_bids")),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_leases_deployment_id_deployments")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_leases_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["accounts.id"], name=op.f("fk_leases_provider_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leases")),
    )
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_leases_deployment_id"), ["deployment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_leases_provider_id_state"), ["provider_id", "state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_leases_state_deployment_id"), ["state", "deployment_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leases_state_deployment_id"))
        batch_op.drop_index(batch_op.f("ix_leases_provider_id_state"))
        batch_op.drop_index(batch_op.f("ix_leases_deployment_id"))

    op.drop_table("leases")
    with op.batch_alter_table("bids", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_bids_open_per_provider",
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )
        batch_op.drop_index(batch_op.f("ix_bids_provider_id_state"))
        batch_op.drop_index(batch_op.f("ix_bids_order_id_state"))

    op.drop_table("bids")
    op.drop_table("provider_nodes")
    op.drop_table("settlement_rounds")
