"""Accounts, the network's clock, balances and the ledger.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "network",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("genesis_ms", sa.BigInteger, nullable=False),
        sa.Column("block_ms", sa.Integer, nullable=False),
        sa.Column("settlement_interval", sa.Integer, nullable=False),
        sa.Column("fee_bps", sa.Integer, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_network_single_row")),
        sa.CheckConstraint("block_ms > 0", name=op.f("ck_network_block_positive")),
        sa.CheckConstraint("settlement_interval > 0", name=op.f("ck_network_interval_positive")),
        sa.CheckConstraint("fee_bps >= 0 AND fee_bps <= 10000", name=op.f("ck_network_fee_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_height", sa.BigInteger, nullable=False),
        sa.CheckConstraint("role IN ('tenant', 'provider')", name=op.f("ck_accounts_role_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_accounts_token_hash")),
    )
    op.create_table(
        "balances",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_balances_not_negative")),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_balances")),
    )
    op.create_table(
        "transfers",
        sa.Column("id", ID, primary_key=True),
        sa.Column("height", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("lease_id", sa.BigInteger, nullable=True),
        sa.Column("start_block", sa.BigInteger, nullable=True),
        sa.Column("end_block", sa.BigInteger, nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_transfers_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
    )
    op.create_index(op.f("ix_transfers_source_id"), "transfers", ["source", "id"])
    op.create_index(op.f("ix_transfers_destination_id"), "transfers", ["destination", "id"])


def downgrade() -> None:
    op.drop_table("transfers")
    op.drop_table("balances")
    op.drop_table("accounts")
    op.drop_table("network")
