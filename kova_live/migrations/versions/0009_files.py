"""Uploaded files: which tenant uploaded which content (by SHA-256), and which deployments'
manifests place them in their containers.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_height", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("size >= 0", name=op.f("ck_files_size_not_negative")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["accounts.id"], name=op.f("fk_files_tenant_id_accounts")
        ),
        sa.PrimaryKeyConstraint("sha256", "tenant_id", name=op.f("pk_files")),
    )
    op.create_table(
        "deployment_files",
        sa.Column("deployment_id", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"],
            name=op.f("fk_deployment_files_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("deployment_id", "sha256", name=op.f("pk_deployment_files")),
    )
    with op.batch_alter_table("deployment_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployment_files_sha256"), ["sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deployment_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_files_sha256"))
    op.drop_table("deployment_files")
    op.drop_table("files")
