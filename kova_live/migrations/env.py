"""Alembic's environment for Kova's orchestrator database (run through ``kova-live migrate``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from kova_live.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = create_engine(url)
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
