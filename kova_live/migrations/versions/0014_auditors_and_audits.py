"""Auditors and their audits of providers.

- ``accounts`` may be auditors too: the role check constraint widens to
  ``('tenant', 'provider', 'auditor')`` (on SQLite, batch mode rebuilds the table with it).
- ``audits``: one row per auditor and provider, the attributes the auditor vouches for (JSON)
  and the height it signed at. A manifest's ``signedBy`` names auditors as
  ``auditor:<account id>``.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _role_check(roles: str) -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_accounts_role_known"), type_="check")
        batch_op.create_check_constraint("role_known", f"role IN ({roles})")


def upgrade() -> None:
    _role_check("'tenant', 'provider', 'auditor'")
    op.create_table(
        "audits",
        sa.Column("provider_id", sa.BigInteger(), nullable=False),
        sa.Column("auditor_id", sa.BigInteger(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["accounts.id"], name=op.f("fk_audits_provider_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["auditor_id"], ["accounts.id"], name=op.f("fk_audits_auditor_id_accounts")
        ),
        sa.PrimaryKeyConstraint("provider_id", "auditor_id", name=op.f("pk_audits")),
    )


def downgrade() -> None:
    op.drop_table("audits")
    op.execute("DELETE FROM accounts WHERE role = 'auditor'")
    _role_check("'tenant', 'provider'")
