"""The orchestrator's database: where it is, its migrations, and the network row.

PostgreSQL in production (``postgresql+psycopg://...``), an embedded SQLite file as the
zero-setup default (``<data dir>/kova.sqlite3``). The server uses SQLAlchemy's asyncio engine;
migrations and operator commands use a synchronous one on the same URL.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .market import Settings
from .schema import network

__all__ = [
    "DatabaseError",
    "NetworkSettings",
    "async_engine",
    "check_schema",
    "default_url",
    "ensure_network",
    "hold_writer_lock",
    "migrate",
    "retriable",
    "sync_engine",
    "transact",
]

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class DatabaseError(Exception):
    """The database cannot be used as it is; the message says what to do."""


def default_url(data_dir: Path) -> str:
    """The embedded default: a SQLite file in the data folder."""
    return f"sqlite:///{(data_dir / 'kova.sqlite3').resolve()}"


def _parse(url: str) -> tuple[str, str]:
    """Return (sync URL, async URL) for a database URL, or raise :class:`DatabaseError`."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        sync = parsed.set(drivername="sqlite").render_as_string(False)
        return sync, parsed.set(drivername="sqlite+aiosqlite").render_as_string(False)
    if backend == "postgresql":
        url_psycopg = parsed.set(drivername="postgresql+psycopg")
        text = url_psycopg.render_as_string(False)
        return text, text
    raise DatabaseError(
        f"unsupported database {backend!r}: use postgresql+psycopg://... or sqlite:///path"
    )


WRITER_LOCK = 0x6B6F7661  # "kova": the PostgreSQL advisory lock of the one serving process


class _Held:
    """What keeps a lock for as long as the process lives (it is released when the process
    ends, however it ends: a connection the database sees close, a file the system closes)."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource

    def release(self) -> None:
        self.resource.close()


def hold_writer_lock(url: str, wait: float = 5.0) -> _Held:
    """Take the database's one writer's lock for this process, or raise :class:`DatabaseError`
    if another process still holds it after ``wait`` seconds (a server killed a moment ago may
    not have been seen to go yet). The orchestrator's market lives in one process's memory
    (``kova_live.writer``): a second ``kova-live serve`` on the same database would be a
    second writer, each blind to the other's commands. On PostgreSQL a session advisory lock,
    on SQLite an exclusive ``flock`` of a file beside the database."""
    sync, _ = _parse(url)
    parsed = make_url(sync)
    deadline = time.monotonic() + wait
    if parsed.get_backend_name() == "sqlite":
        import fcntl

        path = Path(f"{parsed.database}.serving")
        handle = path.open("a")
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return _Held(handle)
            except OSError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise DatabaseError(
                        f"another kova-live serve is running on this database ({path} is locked)"
                    ) from None
                time.sleep(0.2)
    import psycopg

    connection = psycopg.connect(parsed.set(drivername="postgresql").render_as_string(False),
                                 autocommit=True)  # fmt: skip
    while True:
        taken = connection.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)).fetchone()
        if taken and taken[0]:
            return _Held(connection)
        if time.monotonic() > deadline:
            connection.close()
            raise DatabaseError("another kova-live serve is running on this database")
        time.sleep(0.2)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers run beside the writer; FULL syncs every commit, so an acknowledged command
    # survives even a machine crash, not only a killed process
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def sync_engine(url: str) -> Engine:
    """A synchronous engine (migrations, operator commands)."""
    sync, _ = _parse(url)
    engine = create_engine(sync)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _begin_immediate(connection: Connection) -> None:
    # SQLite: take the write lock when a transaction starts, not at its first write, so that a
    # command's reads and writes form one serial step (PostgreSQL locks the rows it reads with
    # SELECT ... FOR UPDATE instead)
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def async_engine(url: str, *, reads_only: bool = False) -> AsyncEngine:
    """The server's engine. On SQLite every transaction is ``BEGIN IMMEDIATE``: one writer at a
    time, with what it read still true when it writes; except with ``reads_only`` (a process
    that only reads, each read one statement: the ingress's), which never takes that lock."""
    _, asynchronous = _parse(url)
    sqlite = asynchronous.startswith("sqlite")
    engine = create_async_engine(
        asynchronous,
        pool_pre_ping=not sqlite,
        # PostgreSQL ends a transaction whose client has not said a word for 10 s (a leader
        # cut off from the database mid-transaction): what it holds (the share lock of the
        # leader epoch it read, kova_live.leader) does not keep a new leader waiting for ever,
        # and what it wrote never commits
        connect_args=(
            {"isolation_level": None}
            if sqlite
            else {"options": "-c idle_in_transaction_session_timeout=10000"}
        ),
    )
    if sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if not reads_only:
            event.listen(engine.sync_engine, "begin", _begin_immediate)
    return engine


def snapshot_reader(engine: AsyncEngine) -> AsyncEngine:
    """The engine for reads that take several statements: on PostgreSQL each of its
    transactions is REPEATABLE READ, so all its statements see one snapshot (a deployment, its
    orders and its leases as of one moment, never a lease closed by a commit that its order's
    row predates). A SQLite transaction is serializable already."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return engine


def _alembic(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", _parse(url)[0].replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(_alembic("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The migration the database is at (``None``: never migrated)."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def migrate(url: str) -> tuple[str | None, str]:
    """Bring the database to the newest schema; return (revision before, revision after)."""
    before = current_revision(url)
    command.upgrade(_alembic(url), "head")
    return before, head_revision()


def check_schema(url: str) -> None:
    """Raise :class:`DatabaseError` unless the database is at the newest schema."""
    current, head = current_revision(url), head_revision()
    if current != head:
        state = "has no Kova schema" if current is None else f"is at schema {current}"
        raise DatabaseError(
            f"the database {state}, this server needs {head}: run `kova-live migrate`"
            " with the same --database-url (or KOVA_DATABASE_URL) first"
        )


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """When height 0 was and how long a block lasts, as the database records them, and the
    settlement settings that go with them."""

    genesis_ms: int
    block_ms: int
    settlement_interval: int
    fee_bps: int

    @property
    def settlement(self) -> Settings:
        """What the market's commands need of these."""
        return Settings(settlement_interval=self.settlement_interval, fee_bps=self.fee_bps)


def ensure_network(url: str, *, block_ms: int | None = None) -> NetworkSettings:
    """Read the network row; on a new database, create it with genesis now and ``block_ms``
    (default 1000: 1 block = 1 s).

    Raises :class:`DatabaseError` if ``block_ms`` is given and differs from the database's:
    changing it would move every height.
    """
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            row = connection.execute(select(network)).first()
            if row is None:
                connection.execute(
                    insert(network).values(
                        id=1,
                        genesis_ms=int(time.time() * 1000),
                        block_ms=block_ms or 1000,
                        settlement_interval=60,
                        fee_bps=0,
                    )
                )
                row = connection.execute(select(network)).one()
    finally:
        engine.dispose()
    if block_ms is not None and row.block_ms != block_ms:
        raise DatabaseError(
            f"this network's blocks last {row.block_ms / 1000:g} s, not {block_ms / 1000:g} s:"
            f" start the server with --block-seconds {row.block_ms / 1000:g}"
        )
    return NetworkSettings(row.genesis_ms, row.block_ms, row.settlement_interval, row.fee_bps)


_RETRIABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def retriable(exc: BaseException) -> bool:
    """Whether a database error means "run the transaction again": a PostgreSQL deadlock or
    serialization failure, or SQLite's write lock still busy after its timeout."""
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    if getattr(original, "sqlstate", None) in _RETRIABLE_SQLSTATES:
        return True
    return "database is locked" in str(original)


async def transact(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], attempts: int = 6
) -> T:
    """Run ``work`` in a transaction, again from the start if the database asks for a retry
    (see :func:`retriable`): everything the failed attempt did was rolled back."""
    for attempt in range(attempts):
        try:
            async with engine.begin() as connection:
                return await work(connection)
        except DBAPIError as exc:
            if not retriable(exc) or attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
    raise AssertionError("unreachable")
