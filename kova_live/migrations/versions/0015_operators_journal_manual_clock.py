"""Operators, the command journal, and the manual clock.

- ``accounts`` may be operators: the role check constraint widens to
  ``('tenant', 'provider', 'auditor', 'operator')``. ``kova-live admin operator`` makes them;
  ``POST /v1/accounts`` never does.
- ``commands``: the journal of applied commands, each under its account and idempotency key
  (unique), with the answer a retry gets back (:mod:`kova_live.journal`).
- ``network.manual_height``: where an operator last moved a manual clock (``serve --clock
  manual``); NULL for a network that never ran on one.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _role_check(roles: str) -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_accounts_role_known"), type_="check")
        batch_op.create_check_constraint("role_known", f"role IN ({roles})")


def upgrade() -> None:
    _role_check("'tenant', 'provider', 'auditor', 'operator'")
    op.create_table(
        "commands",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("idem_key", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=256), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index(
        "uq_commands_account_id_idem_key", "commands", ["account_id", "idem_key"], unique=True
    )
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.add_column(sa.Column("manual_height", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.drop_column("manual_height")
    op.drop_index("uq_commands_account_id_idem_key", table_name="commands")
    op.drop_table("commands")
    op.execute("DELETE FROM accounts WHERE role = 'operator'")
    _role_check("'tenant', 'provider', 'auditor'")
