"""Uploaded files' content in the database.

- ``file_chunks`` (sha256, seq, data): each uploaded content once, in chunks of 1 MiB, so every
  orchestrator on the database (a leader and its standbys) serves every file and losing a
  machine loses none. Until now the content lived in the receiving process's
  ``--data-dir``/``files``; ``kova-live serve`` moves what it finds there into the table when
  it starts (``kova_live.files.import_folder``).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_chunks",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "seq", name=op.f("pk_file_chunks")),
    )


def downgrade() -> None:
    op.drop_table("file_chunks")
