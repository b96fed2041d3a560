"""Lighter writes for settlement rounds.

- The ledger's account indexes cover only tenants' and providers' own accounts, the ones
  ``GET /v1/accounts/me/transactions`` lists. Every round appends a payment out of an escrow
  for each paid lease, and with a network fee a fee into the network's account: those rows no
  longer go into either index.
- PostgreSQL only: pages of ``leases`` and ``balances`` filled to 45% (0008 left 30% free). A
  round rewrites almost every row of a page (each paid lease, each escrow); the new versions
  stay in the page, touching no index (heap-only tuples), only if the page has room for all of
  them. At 70% it did not: a round over 100,000 leases spent 0.77 s updating leases, at 45%
  0.28 s (``benchmarks/live_settlement.py``). Existing pages keep their fill until rewritten.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

HOLDER_WHERE = "({0} LIKE 'tenant:%' OR {0} LIKE 'provider:%')"  # as in kova_live.schema
TABLES = ("leases", "balances")


def _indexes(partial: bool) -> None:
    for column in ("source", "destination"):
        name = f"ix_transfers_{column}_id"
        op.drop_index(name, table_name="transfers")
        where = sa.text(HOLDER_WHERE.format(column)) if partial else None
        op.create_index(
            name, "transfers", [column, "id"], postgresql_where=where, sqlite_where=where
        )


def upgrade() -> None:
    _indexes(partial=True)
    if op.get_context().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 45)")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
    _indexes(partial=False)
