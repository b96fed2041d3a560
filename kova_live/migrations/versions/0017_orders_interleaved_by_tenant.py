"""Providers' listing of open orders interleaves tenants.

- ``orders`` gains ``tenant_seq``: how many orders its tenant had made before it (the
  existing orders are numbered by id, per tenant). ``GET /v1/orders`` lists open orders by
  (tenant_seq, id): every tenant's first order, then every tenant's second…, so one tenant's
  thousands of orders do not come before another tenant's one; and it pages with a cursor over
  the same key, so every open order can be reached.
- an index on (state, tenant_seq, id) for that listing.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tenant_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        """
        UPDATE orders SET tenant_seq = numbered.seq
        FROM (
            SELECT o.id AS id,
                   ROW_NUMBER() OVER (PARTITION BY d.tenant_id ORDER BY o.id) - 1 AS seq
            FROM orders o JOIN deployments d ON d.id = o.deployment_id
        ) AS numbered
        WHERE orders.id = numbered.id
        """
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_orders_state_tenant_seq_id"), ["state", "tenant_seq", "id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_state_tenant_seq_id"))
        batch_op.drop_column("tenant_seq")
