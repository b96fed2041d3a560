"""A scratch PostgreSQL database for a benchmark: created beside ``admin_url``'s database,
migrated to the newest schema, and dropped at the end however the benchmark ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from kova_live.db import migrate

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database(admin_url: str = ADMIN) -> Iterator[str]:
    """The scratch database's SQLAlchemy URL (``postgresql+psycopg://...``)."""
    name = f"kova_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    host = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{host}/{name}"
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def vacuum(url: str) -> None:
    """As autovacuum leaves a running server's tables: statistics gathered, new rows'
    visibility set."""
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
