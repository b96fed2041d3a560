"""The database: migrations (SQLite and PostgreSQL), the schema check at start, the ledger's
guarantees under concurrent transactions."""

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text

from kova_core import InsufficientBalance
from kova_live.db import async_engine, current_revision, head_revision, migrate, sync_engine
from kova_live.ledger import balance, move
from kova_live.schema import metadata, transfers

from .conftest import Server, kova_live


def test_migrate_creates_exactly_the_schema_the_code_describes(database_url):
    assert current_revision(database_url) is None
    before, after = migrate(database_url)
    assert (before, after) == (None, head_revision())
    engine = sync_engine(database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert diff == []


def test_migrate_command_is_idempotent(database_url):
    first = kova_live("migrate", "--database-url", database_url)
    assert first.returncode == 0, first.stderr
    assert "from nothing to schema" in first.stdout
    again = kova_live("migrate", "--database-url", database_url)
    assert again.returncode == 0 and "already at schema" in again.stdout


def test_serve_refuses_an_older_schema_and_says_how_to_fix_it(database_url, tmp_path):
    migrate(database_url)
    engine = sync_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    result = kova_live("serve", "--database-url", database_url, "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "is at schema 0000" in result.stderr and "kova-live migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_another_block_length(database_url, tmp_path):
    from kova_live.db import ensure_network

    migrate(database_url)
    ensure_network(database_url, block_ms=1000)
    result = kova_live(
        "serve", "--database-url", database_url, "--data-dir", str(tmp_path),
        "--block-seconds", "0.5",
    )  # fmt: skip
    assert result.returncode == 2 and "--block-seconds 1" in result.stderr


def test_a_second_server_on_the_same_sqlite_file_is_refused_and_the_first_serves_on(tmp_path):
    # the market lives in the serving process's memory: a second writer would be blind to it
    # (on PostgreSQL a second server is a standby: tests/live/test_leader.py)
    database_url = f"sqlite:///{tmp_path / 'kova.sqlite3'}"
    first = Server(database_url, tmp_path / "first", 0.05)
    try:
        second = kova_live(
            "serve", "--database-url", database_url, "--data-dir", str(tmp_path / "second"),
            "--block-seconds", "0.05", "--port", "0",
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert "another kova-live serve is running on this database" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.client.get("/healthz").status_code == 200
    finally:
        first.stop()
    # once the first has stopped, a server starts on the database again (test_crash.py
    # restarts servers killed with SIGKILL: the lock goes with the process)
    again = Server(database_url, tmp_path / "again", 0.05)
    again.stop()


def test_an_unknown_database_is_refused_by_name(tmp_path):
    result = kova_live("migrate", "--database-url", "mysql://root@localhost/kova")
    assert result.returncode == 2 and "unsupported database 'mysql'" in result.stderr


def test_racing_debits_cannot_both_take_the_same_money(database_url):
    """Twenty transactions each try to move the whole balance out: exactly one succeeds."""
    migrate(database_url)

    async def scenario():
        engine = async_engine(database_url)
        async with engine.begin() as connection:
            await move(connection, source="external", destination="tenant:1", amount=100,
                       reason="credit", height=0)  # fmt: skip

        async def take(i):
            try:
                async with engine.begin() as connection:
                    await move(connection, source="tenant:1", destination=f"escrow:{i}",
                               amount=100, reason="deposit", height=1)  # fmt: skip
                return True
            except InsufficientBalance:
                return False

        results = await asyncio.gather(*(take(i) for i in range(20)))
        async with engine.connect() as connection:
            held = await balance(connection, "tenant:1")
            moved = (await connection.execute(select(transfers.c.destination))).scalars().all()
        await engine.dispose()
        return results, held, moved

    results, held, moved = asyncio.run(scenario())
    assert results.count(True) == 1
    assert held == 0
    assert len(moved) == 2  # the credit and the one deposit; the losers left nothing behind


@pytest.mark.parametrize("amount", [0, -5, 1.5, True])
def test_the_ledger_refuses_amounts_that_are_not_positive_integers(database_url, amount):
    from kova_core import InvalidAmount

    migrate(database_url)

    async def scenario():
        engine = async_engine(database_url)
        try:
            async with engine.begin() as connection:
                await move(connection, source="external", destination="tenant:1",
                           amount=amount, reason="credit", height=0)  # fmt: skip
        finally:
            await engine.dispose()

    with pytest.raises(InvalidAmount):
        asyncio.run(scenario())


def test_an_accounts_transfers_are_read_from_its_indexes_not_the_whole_ledger(database_url):
    """The ledger's account indexes are partial (payments out of escrows and fees into the
    network stay out of them); listing an account's transfers must still read them, on both
    databases, and list exactly that account's transfers, newest first."""
    from kova_live.ledger import account_transfers

    migrate(database_url)
    engine = sync_engine(database_url)
    with engine.begin() as connection:
        connection.execute(transfers.insert(), [
            {"height": 1, "source": source, "destination": destination, "amount": 5, "reason": "r"}
            for source, destination in [("external", "tenant:1"), ("tenant:1", "escrow:1"),
                                        ("escrow:1", "provider:2"), ("escrow:1", "network"),
                                        ("escrow:1", "tenant:1"), ("external", "tenant:11")]
        ])  # fmt: skip
        statement = account_transfers("tenant:1", before=2**63 - 1, limit=10)
        listed = [(row.id, row.source, row.destination) for row in connection.execute(statement)]
        sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table otherwise
            plan = "\n".join(connection.execute(text("EXPLAIN " + sql.replace("%%", "%"))).scalars())
        else:
            plan = "\n".join(str(row[-1]) for row in connection.execute(text("EXPLAIN QUERY PLAN " + sql)))
    engine.dispose()
    assert listed == [(5, "escrow:1", "tenant:1"), (2, "tenant:1", "escrow:1"), (1, "external", "tenant:1")]
    assert "ix_transfers_source_id" in plan and "ix_transfers_destination_id" in plan, plan
