"""Where providers' leases are reached, and a provider's leases newest first.

- ``provider_nodes`` gains the endpoint addresses and port range a provider's heartbeat
  registers (all NULL: nothing registered). A lease's reported endpoint must be one of them.
  The API checks the values (no CHECK constraint: adding one on SQLite means rebuilding the
  table).
- ``leases`` gains an index on (provider_id, id): ``GET /v1/leases`` pages through a
  provider's leases newest first, with or without a state (PostgreSQL's index on
  (provider_id, state) alone would sort every lease of the provider for each page).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provider_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("endpoint_addresses", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("endpoint_port_low", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("endpoint_port_high", sa.Integer(), nullable=True))
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leases_provider_id_id"), ["provider_id", "id"])


def downgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leases_provider_id_id"))
    with op.batch_alter_table("provider_nodes", schema=None) as batch_op:
        batch_op.drop_column("endpoint_port_high")
        batch_op.drop_column("endpoint_port_low")
        batch_op.drop_column("endpoint_addresses")
