"""Invite codes and suspended accounts.

- ``invites``: one row per invite code an operator issued (only the code's SHA-256), who
  issued it and when, and which account used it (``kova-live serve --registration invite``).
- ``accounts.suspended_by``, ``suspended_height``, ``suspended_ms``: an operator's suspension
  (NULL: in good standing). A suspended account's token is refused; resuming it gives a new one.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.BigInteger(), nullable=False),
        sa.Column("issued_height", sa.BigInteger(), nullable=False),
        sa.Column("issued_ms", sa.BigInteger(), nullable=False),
        sa.Column("used_by", sa.BigInteger(), nullable=True),
        sa.Column("used_height", sa.BigInteger(), nullable=True),
        sa.Column("used_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["issued_by"], ["accounts.id"], name=op.f("fk_invites_issued_by_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["used_by"], ["accounts.id"], name=op.f("fk_invites_used_by_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invites")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_invites_code_hash")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_by", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("suspended_height", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("suspended_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("suspended_ms")
        batch_op.drop_column("suspended_height")
        batch_op.drop_column("suspended_by")
    op.drop_table("invites")
